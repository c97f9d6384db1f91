"""`gridtwin opcua collect`: subscribe to every variable of an OPC UA server's ISA-95 tree and store
each point once, with its unit and quality, in the site's SQLite database (and InfluxDB).

One session at a time, encrypted (``[opcua] policy``/``mode``) with the site PKI's OPC UA identity
``collector``; the server's certificate must be signed by the site CA and not revoked. After
connecting the collector browses the tree under the namespace (``Objects/<enterprise>/<site>/<area>/
<line>/<machine>/<tag>``), or, for a ``[[opcua.sources]]`` entry, takes its mapping (ISA-95 path and
tag -> NodeId; a NodeId the server lacks or one that holds no value is a ConfigError naming the
key, not retried), reads each variable's EngineeringUnits, and subscribes to all of them
(``sampling_ms``, ``queue_size``): subscriptions, never polling. Each notification becomes a row
(the ISA-95 path, tag, source time in ns, the value as float, text or Boolean, unit, quality from
the status code's severity: Good -> GOOD, Uncertain -> UNCERTAIN, Bad -> BAD).

Rows are queued in memory and committed by one flusher every 50 ms with their InfluxDB lines
(measurement ``opcua_telemetry``) in the store's spool when the site's storage is InfluxDB; the
daemon's spool forwarder writes those in order and holds them while InfluxDB is away. If a commit
fails (the database locked or unwritable), the rows stay queued, in order, and are retried: none
is dropped. The key (path, tag, source time) stores a point once even when a reconnect delivers it
again. While the server is away the collector says so once, stores one BAD row per variable (no
value: nothing is invented), and reconnects with exponential backoff up to ``reconnect_max_s``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import time

from gridtwin.daemon.lineprotocol import line
from gridtwin.errors import ConfigError
from gridtwin.opcua import certs
from gridtwin.opcua.server import POLICY_NAMES, namespace_uri

MEASUREMENT = "opcua_telemetry"

# the data types a mapped variable may have (ns 0 ids): Boolean .. Double, String, LocalizedText,
# and the abstract Number, Integer, UInteger
VALUE_TYPES = {
    1: "Boolean",
    2: "SByte",
    3: "Byte",
    4: "Int16",
    5: "UInt16",
    6: "Int32",
    7: "UInt32",
    8: "Int64",
    9: "UInt64",
    10: "Float",
    11: "Double",
    12: "String",
    21: "LocalizedText",
    26: "Number",
    27: "Integer",
    28: "UInteger",
}


def quality_of(code: int) -> str:
    """OPC UA Part 4, 7.34: the two top bits of a status code are its severity."""
    sev = (code >> 30) & 0x3
    return "GOOD" if sev == 0 else "UNCERTAIN" if sev == 1 else "BAD"


class Clock:
    """The collector's time: how long a server has been away, the waits between reconnects, and
    the stamp of the BAD rows it writes. The wall clock here; a test drives another to keep a
    server away for a minute of the collector's time without a minute of waiting."""

    monotonic = staticmethod(time.monotonic)
    time_ns = staticmethod(time.time_ns)

    async def wait(self, stop: asyncio.Event, seconds: float) -> None:
        """Wait `seconds`, or less when `stop` is set."""
        try:
            await asyncio.wait_for(stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass


def _ns(ts) -> int:
    if ts is None:
        return time.time_ns()
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.timezone.utc)
    return int(ts.timestamp()) * 1_000_000_000 + ts.microsecond * 1000


class Collector:
    def __init__(
        self,
        site,
        store,
        pki,
        endpoint: str | None = None,
        influx: bool | None = None,
        log=None,
        source: int | None = None,
        clock: Clock | None = None,
    ):
        self.site, self.store, self.pki = site, store, pki
        self.clock = clock or Clock()
        self.cfg = site.opcua
        # source k: [[opcua.sources]] entry k, its endpoint, security and mapping; None: browse the
        # tree
        self.source = self.cfg.sources[source] if source is not None else None
        self.source_key = f"opcua.sources[{source}]"
        src = self.source if self.source is not None else {}
        self.endpoint = endpoint or src.get("endpoint") or self.cfg.endpoint
        self.policy = src.get("policy") or self.cfg.policy
        self.mode = src.get("mode") or self.cfg.mode
        self.influx = site.storage.backend == "influxdb" if influx is None else influx
        self.log = log or (
            lambda msg: print(f"gridtwin: opcua collect: {msg}", file=sys.stderr, flush=True)
        )
        self.vars: dict[
            str, tuple[tuple, str, str]
        ] = {}  # NodeId string -> (ISA-95 path, tag, unit)
        self.queue: list[tuple] = []
        self.stored = 0  # rows committed (new)
        self.received = 0  # notifications received
        self.connected = asyncio.Event()
        self.sessions = 0
        self.flush_errors = 0
        self._down_since: float | None = None
        self.committed = asyncio.Event()
        # called with the new rows after each commit (the daemon: analytics, `tail`, the spool's
        # forwarder); on the event loop, so each must be quick and must not raise
        self.listeners: list = []
        self._by_handle: dict = {}
        self._change_event = None  # asyncua's DataChangeEvent class, once a session imports it
        # a ConfigError that stopped this source (the daemon's health)
        self.error: str | None = None

    # -- the subscription handler (asyncua calls it for every notification) --------------------
    def datachange_notification(self, node, val, data) -> None:
        item = data.monitored_item
        info = self._by_handle.get(item.ClientHandle)  # a NodeId's string, once per item
        if info is None:
            info = self.vars.get(node.nodeid.to_string())
            if info is None:
                return
            self._by_handle[item.ClientHandle] = info
        dv = item.Value
        path, tag, unit = info
        q = quality_of(dv.StatusCode.value if dv.StatusCode is not None else 0)
        self._add(path, tag, _ns(dv.SourceTimestamp or dv.ServerTimestamp), val, unit, q)
        self.received += 1

    def status_change_notification(self, status) -> None:
        pass

    def _event(self, ev) -> None:
        if type(ev) is self._change_event:
            self.datachange_notification(ev.node, ev.value, ev.data)

    async def _drain(self, sub) -> None:
        """The subscription's events in asyncua 2.1's iterator mode: its handler mode makes an
        asyncio task per point, most of a collector's CPU at 10,000 points/s."""
        async for ev in sub:
            self._event(ev)

    def _add(self, path, tag, ts_ns, val, unit, quality) -> None:
        num = text = flag = None
        if isinstance(val, bool):  # a Boolean variable: value_bool, not a number
            flag = int(val)
        elif isinstance(val, (int, float)):
            num = float(val)
        elif val is not None:
            text = str(val)
        self.queue.append((*path, tag, ts_ns, num, text, unit, quality, self.endpoint, flag))

    # -- storing ---------------------------------------------------------------------------------
    def _lines(self, rows) -> list[str]:
        out = []
        for e, s, a, ln, m, tag, ts, num, text, _unit, q, _src, flag in rows:
            fields: dict = {"quality": q}
            if num is not None:
                fields["value_float"] = num
            if text is not None:
                fields["value_string"] = text
            if flag is not None:
                fields["value_bool"] = bool(flag)
            out.append(
                line(
                    MEASUREMENT,
                    {"enterprise": e, "site": s, "area": a, "line": ln, "machine": m, "tag": tag},
                    fields,
                    ts,
                )
            )
        return out

    async def flush(self) -> int:
        """Commit what is queued; on failure keep it queued (in order) and return 0."""
        if not self.queue:
            return 0
        rows, self.queue = self.queue, []
        try:
            new = await asyncio.to_thread(
                self.store.write_opcua, rows, self._lines(rows) if self.influx else None
            )
        except Exception as exc:  # the store is away: hold the rows, say so once per outage
            self.queue[:0] = rows
            if not self.flush_errors:
                self.log(f"cannot store points ({exc}); holding {len(self.queue)} and retrying")
            self.flush_errors += 1
            return 0
        if self.flush_errors:
            self.log(f"store back: {len(rows)} held points written")
            self.flush_errors = 0
        self.stored += new
        self.committed.set()
        for fn in self.listeners:
            fn(rows)
        return new

    async def _flusher(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 0.05)
            except asyncio.TimeoutError:
                pass
            await self.flush()
        await self.flush()

    def _mark_bad(self) -> None:
        now = self.clock.time_ns()
        for path, tag, unit in self.vars.values():
            self._add(path, tag, now, None, unit, "BAD")

    # -- the session -----------------------------------------------------------------------------
    @staticmethod
    async def _refs(client, ua, nodeids, ref_type, mask) -> list[list]:
        """Forward references of many nodes, a few hundred per Browse request (a server of thousands
        of variables is browsed in a handful of round trips, not one per node)."""
        out = []
        for k in range(0, len(nodeids), 500):
            params = ua.BrowseParameters()
            params.View.Timestamp = ua.get_win_epoch()
            params.RequestedMaxReferencesPerNode = 0
            for nid in nodeids[k : k + 500]:
                d = ua.BrowseDescription()
                d.BrowseDirection = ua.BrowseDirection.Forward
                d.ReferenceTypeId = ua.NodeId(ref_type)
                d.IncludeSubtypes = True
                d.NodeClassMask = mask
                d.ResultMask = ua.BrowseResultMask.All
                d.NodeId = nid
                params.NodesToBrowse.append(d)
            for res in await client.uaclient.browse(params):
                refs, cp = list(res.References), res.ContinuationPoint
                while cp:
                    nxt = ua.BrowseNextParameters()
                    nxt.ContinuationPoints = [cp]
                    nxt.ReleaseContinuationPoints = False
                    [more] = await client.uaclient.browse_next(nxt)
                    refs += more.References
                    cp = more.ContinuationPoint
                out.append(refs)
        return out

    async def _browse(self, client, ua) -> list:
        """Every variable five Objects below Objects in our namespace, with its EngineeringUnits."""
        idx = await client.get_namespace_index(namespace_uri(self.site))
        level = [(client.nodes.objects.nodeid, ())]
        found = []  # (nodeid, path, tag)
        mask = ua.NodeClass.Object | ua.NodeClass.Variable
        while level:
            nxt = []
            refs = await self._refs(
                client, ua, [nid for nid, _ in level], ua.ObjectIds.HierarchicalReferences, mask
            )
            for (_nid, path), children in zip(level, refs):
                for ref in children:
                    if ref.BrowseName.NamespaceIndex != idx:
                        continue
                    if ref.NodeClass == ua.NodeClass.Object and len(path) < 5:
                        nxt.append((ref.NodeId, path + (ref.BrowseName.Name,)))
                    elif ref.NodeClass == ua.NodeClass.Variable and len(path) == 5:
                        found.append((ref.NodeId, path, ref.BrowseName.Name))
            level = nxt
        props = await self._refs(
            client, ua, [f[0] for f in found], ua.ObjectIds.HasProperty, ua.NodeClass.Variable
        )
        eu = {}
        for i, refs in enumerate(props):
            for ref in refs:
                if ref.BrowseName.NamespaceIndex == 0 and ref.BrowseName.Name == "EngineeringUnits":
                    eu[i] = ref.NodeId
        units = {}
        keys = list(eu)
        for k in range(0, len(keys), 1000):
            chunk = keys[k : k + 1000]
            values = await client.read_values([client.get_node(eu[i]) for i in chunk])
            for i, v in zip(chunk, values):
                units[i] = getattr(getattr(v, "DisplayName", None), "Text", "") or ""
        nodes = []
        for i, (nid, path, tag) in enumerate(found):
            node = client.get_node(nid)
            self.vars[node.nodeid.to_string()] = (path, tag, units.get(i, ""))
            nodes.append(node)
        return nodes

    async def _mapped(self, client, ua) -> list:
        """The nodes of the source's mapping; a NodeId the server lacks or that holds no value is a
        ConfigError naming the site key (retrying would not mend it)."""
        nodes = []
        for j, pt in enumerate(self.source["points"]):
            key = f"{self.source_key}.points[{j}].node"
            fix = f"map a variable `gridtwin opcua browse --endpoint {self.endpoint}` lists"
            try:
                node = client.get_node(pt["node"])
                dtype = await node.read_data_type()
            except ua.UaStatusCodeError as exc:
                what = (
                    "no such node"
                    if isinstance(exc, ua.uaerrors.BadNodeIdUnknown)
                    else "not a variable"
                )
                raise ConfigError(
                    self.site.path, key, f"{pt['node']!r}: {what} on {self.endpoint}", fix
                ) from None
            except ValueError as exc:  # e.g. an nsu= namespace the server does not have
                raise ConfigError(self.site.path, key, f"{pt['node']!r}: {exc}", fix) from None
            if dtype.NamespaceIndex != 0 or dtype.Identifier not in VALUE_TYPES:
                raise ConfigError(
                    self.site.path,
                    key,
                    f"{pt['node']!r} holds a {dtype.to_string()}, not a number, boolean or string",
                    fix,
                )
            unit = pt.get("unit") or ""
            if not unit:
                try:
                    unit = (
                        await (await node.get_child("0:EngineeringUnits")).read_value()
                    ).DisplayName.Text or ""
                except ua.UaError:
                    pass
            self.vars[node.nodeid.to_string()] = (tuple(pt["path"].split("/")), pt["tag"], unit)
            nodes.append(node)
        return nodes

    async def _session(self, stop: asyncio.Event) -> None:
        from asyncua import Client, ua
        from asyncua.common.subscription import DataChangeEvent
        from asyncua.crypto import security_policies as sp

        self._change_event = DataChangeEvent

        ident = certs.issue(
            self.pki, certs.COLLECTOR, certs.application_uri(self.site.id, certs.COLLECTOR)
        )
        client = Client(
            self.endpoint, timeout=10
        )  # a request (1000 monitored items, encrypted) may take seconds
        client.application_uri = ident.uri
        client.certificate_validator = certs.validator(self.pki, "server")
        policy = getattr(sp, f"SecurityPolicy{POLICY_NAMES[self.policy]}")
        await client.set_security(
            policy,
            certificate=str(ident.cert_der),
            private_key=str(ident.key_pem),
            mode=getattr(ua.MessageSecurityMode, self.mode),
        )
        await client.connect()
        drain = sub = None
        try:
            mapped = self.source is not None and self.source.get("points")
            nodes = await (self._mapped(client, ua) if mapped else self._browse(client, ua))
            # iterator mode (no handler), unbounded: a point is never dropped for a slow consumer
            sub = await client.create_subscription(
                max(self.cfg.sampling_ms, 10), None, queue_maxsize=0
            )
            self._by_handle = {}  # client handles are the new subscription's
            drain = asyncio.create_task(self._drain(sub))
            for k in range(0, len(nodes), 500):  # CreateMonitoredItems in bounded requests
                await sub.subscribe_data_change(
                    nodes[k : k + 500],
                    queuesize=self.cfg.queue_size,
                    sampling_interval=float(self.cfg.sampling_ms),
                )
            self.sessions += 1
            if self._down_since is not None:
                self.log(
                    f"{self.endpoint} back after {self.clock.monotonic() - self._down_since:.1f} s"
                )
                self._down_since = None
            else:
                self.log(
                    f"collecting {len(nodes)} variables from {self.endpoint} ({self.policy}, "
                    f"{self.mode})"
                )
            self.connected.set()
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), 0.25)
                except asyncio.TimeoutError:
                    pass
                # a server that went away: the read fails or times out
                await asyncio.wait_for(client.nodes.server_state.read_value(), 1.0)
        finally:
            self.connected.clear()
            if drain is not None:
                drain.cancel()
                queue = sub._event_queue  # what arrived and was not handed over yet: keep it
                while queue is not None and not queue.empty():
                    ev = queue.get_nowait()
                    if ev is not None:
                        self._event(ev)
            try:
                await asyncio.wait_for(client.disconnect(), 1.0)
            except Exception:
                pass

    async def run(self, stop: asyncio.Event) -> None:
        """Collect until `stop` is set: reconnect with backoff, BAD rows while the server is
        away."""
        flusher = asyncio.create_task(self._flusher(stop))
        backoff = 0.1
        try:
            while not stop.is_set():
                try:
                    await self._session(stop)
                    backoff = 0.1
                except (asyncio.CancelledError, ConfigError):
                    raise
                except Exception as exc:
                    if stop.is_set():
                        break
                    if self._down_since is None:
                        self._down_since = self.clock.monotonic()
                        why = type(exc).__name__ + (f": {exc}" if str(exc) else "")
                        self.log(f"{self.endpoint} unreachable ({why}); points BAD, reconnecting")
                        self._mark_bad()
                await self.clock.wait(stop, backoff)
                backoff = min(backoff * 2, self.cfg.reconnect_max_s)
        finally:
            stop.set()
            await flusher
