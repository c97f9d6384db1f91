"""OPC UA (issue #16): the twin's assets served by a real asyncua server and collected by a real
asyncua client on loopback, encrypted with the site PKI's RSA identities.

Shows: every variable stored with its unit and quality, equal to the twin's value; both policies;
a None client, a client whose certificate a foreign CA signed and one the CRL revokes are refused;
a server away for a minute of the collector's clock loses no point (BAD while away, nothing
invented, the current values on return, nothing stored twice); a store that cannot commit holds
the points and writes them when it can; an InfluxDB outage keeps the opcua_telemetry points in the
spool, replayed in order (real InfluxDB 1.x); a Boolean variable as value_bool in both stores."""

import asyncio
import shutil
import sqlite3
import time

import pytest

pytest.importorskip("asyncua")

from asyncua import Client, ua  # noqa: E402
from asyncua.crypto import security_policies as sp  # noqa: E402

from fixtures.broker import free_port  # noqa: E402
from gridtwin.daemon.store_sqlite import SqliteStore  # noqa: E402
from gridtwin.opcua import certs, model  # noqa: E402
from gridtwin.opcua.collector import Clock, Collector, quality_of  # noqa: E402
from gridtwin.opcua.server import TwinServer, security_policies  # noqa: E402
from gridtwin.pki import PKI  # noqa: E402
from gridtwin.site import load_site  # noqa: E402
from gridtwin.twin import Twin  # noqa: E402

SITE = '''[site]
id = "mg"

[twin]
step_s = 1.0
start = "2026-06-21T10:00:00Z"

[opcua]
endpoint = "opc.tcp://127.0.0.1:{port}/gridtwin"
enterprise = "Acme"
{extra}

[[twin.components]]
id = "meter1"
kind = "grid_meter"

[[twin.components]]
id = "inv1"
kind = "pv_inverter"
parent = "meter1"

[[twin.components]]
id = "bess1"
kind = "bess"
parent = "meter1"

[[twin.components]]
id = "panel1"
kind = "load_panel"
parent = "meter1"
'''


@pytest.fixture
def env(tmp_path):
    def make(extra="", port=None, name="site.toml"):
        p = tmp_path / name
        port = port or free_port()
        p.write_text(SITE.format(port=port, extra=extra.replace("{port}", str(port))))
        site = load_site(p)
        pki = PKI.for_site(site)
        pki.ensure(site)
        return site, pki, Twin.from_site(site, seed=5), SqliteStore(tmp_path / "gt.db")

    return make


async def _until(collector, cond, timeout=20.0):
    """Wait for commits until cond() holds (each commit sets the event)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        collector.committed.clear()
        left = end - loop.time()
        assert left > 0, "timed out"
        try:
            await asyncio.wait_for(collector.committed.wait(), left)
        except asyncio.TimeoutError:
            pass


def _latest(store):
    out = {}
    for e, s, a, ln, m, tag, ts, v, text, unit, q in store.opcua_points():
        out[(m, tag)] = (v, text, unit, q, (e, s, a, ln))
    return out


def _expected(tw, site):
    st = tw.state()
    out = {}
    for p in model.points(tw, site.id, site.opcua.enterprise):
        s = st[p.path[-1]]
        out[(p.path[-1], p.tag)] = s["status"] if p.text else s["m"][p.metric]
    return out


def _eq(got, want) -> bool:
    if isinstance(want, str):
        return got == want
    return got is not None and got == pytest.approx(want, rel=1e-9, abs=1e-9)


def _matches(store, tw, site) -> bool:
    got = _latest(store)
    for key, want in _expected(tw, site).items():
        if key not in got:
            return False
        v, text, *_ = got[key]
        if not _eq(text if isinstance(want, str) else v, want):
            return False
    return True


@pytest.mark.parametrize(
    "policy,mode", [("Basic256Sha256", "SignAndEncrypt"), ("Aes128_Sha256_RsaOaep", "Sign")]
)
def test_collector_stores_every_variable_with_unit_and_quality(env, policy, mode):
    site, pki, tw, store = env(f'policy = "{policy}"\nmode = "{mode}"')

    async def main():
        srv = TwinServer(site, tw, pki)
        await srv.start()
        stop = asyncio.Event()
        col = Collector(site, store, pki, log=lambda m: None)
        task = asyncio.create_task(col.run(stop))
        try:
            await asyncio.wait_for(col.connected.wait(), 20)
            for _ in range(3):
                tw.step()
                await srv.publish()
                await _until(col, lambda: _matches(store, tw, site))
        finally:
            stop.set()
            await task
            await srv.stop()
        return len(srv.vars)

    n = asyncio.run(main())
    got = _latest(store)
    assert len(got) == n == len(_expected(tw, site)) > 40
    assert got[("inv1", "Voltage_L1")][2] == "V" and got[("bess1", "SoC")][2] == "%"
    assert got[("meter1", "Energy_Import")][2] == "kWh" and got[("inv1", "Irradiance")][2] == "W/m²"
    assert got[("inv1", "Inverter_State")][1] in ("mppt", "clipping")
    assert got[("meter1", "Frequency")][4] == ("Acme", "mg", "energy", "meter1")
    assert {q for *_, q, _p in got.values()} == {"GOOD"}
    # every row once: (path, tag, source time) is the key
    rows = store.opcua_points()
    assert len(rows) == len({(r[4], r[5], r[6]) for r in rows})


def test_none_foreign_and_revoked_clients_are_refused_and_dev_offers_none(env, tmp_path):
    site, pki, tw, store = env()
    uri = certs.application_uri(site.id, certs.COLLECTOR)
    good = certs.issue(pki, certs.COLLECTOR, uri)
    revoked = certs.issue(pki, "revoked", uri)
    kept = tmp_path / "revoked"  # the pair a revoked client still holds (revoke moves it away)
    shutil.copytree(revoked.cert_der.parent, kept)
    certs.revoke(pki, "revoked")
    revoked = certs.Identity("revoked", uri, kept / "cert.der", kept / "cert.pem", kept / "key.pem")
    foreign_pki = PKI(tmp_path / "foreign")
    foreign_pki.init()
    foreign = certs.issue(foreign_pki, certs.COLLECTOR, uri)
    ep = site.opcua.endpoint
    assert ua.SecurityPolicyType.NoSecurity not in security_policies(site, dev=False)
    assert ua.SecurityPolicyType.NoSecurity in security_policies(site, dev=True)

    async def attempt(ident):
        c = Client(ep, timeout=3)
        c.application_uri = uri
        if ident is not None:
            await c.set_security(
                sp.SecurityPolicyBasic256Sha256,
                certificate=str(ident.cert_der),
                private_key=str(ident.key_pem),
                mode=ua.MessageSecurityMode.SignAndEncrypt,
            )
        try:
            await c.connect()
        except Exception as exc:  # refused: the server's status code, or the channel it closed
            return type(exc).__name__
        v = await c.nodes.server_state.read_value()
        await c.disconnect()
        return f"ok {v}"

    async def none_session_read():
        """A client that skips its own endpoint check: a session on a None channel, then a read.
        (asyncua's server accepted it and answered the read until _deny_none_channels.)"""
        c = Client(ep, timeout=3)
        await c.connect_socket()
        try:
            await c.send_hello()
            await c.open_secure_channel()
            desc = ua.ApplicationDescription()
            desc.ApplicationUri, desc.ApplicationType = uri, ua.ApplicationType.Client
            p = ua.CreateSessionParameters()
            p.ClientNonce, p.ClientDescription, p.EndpointUrl, p.SessionName = (
                b"0" * 32,
                desc,
                ep,
                "none",
            )
            p.RequestedSessionTimeout = 60000
            await c.uaclient.create_session(p)
            a = ua.ActivateSessionParameters()
            a.UserIdentityToken = ua.AnonymousIdentityToken(PolicyId="anonymous")
            await c.uaclient.activate_session(a)
            return (
                "read "
                f"{await c.get_node('ns=2;s=Acme.mg.energy.meter1.inv1.Power_Active').read_value()}"
            )
        except Exception as exc:
            return type(exc).__name__
        finally:
            c.disconnect_socket()

    async def borrowed_certificate_read():
        """A channel opened with the foreign key, and the site's (public) collector certificate
        shown in CreateSession: asyncua validated only the latter, so the foreign key got a
        session."""
        c = Client(ep, timeout=3)
        c.application_uri = uri
        await c.set_security(
            sp.SecurityPolicyBasic256Sha256,
            certificate=str(foreign.cert_der),
            private_key=str(foreign.key_pem),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
        real = c.uaclient.create_session

        async def create_session(params):
            params.ClientCertificate = good.cert_der.read_bytes()
            return await real(params)

        c.uaclient.create_session = create_session
        try:
            await c.connect()
        except Exception as exc:
            return type(exc).__name__
        try:
            return (
                "read "
                f"{await c.get_node('ns=2;s=Acme.mg.energy.meter1.inv1.Power_Active').read_value()}"
            )
        except Exception as exc:
            return type(exc).__name__
        finally:
            await c.disconnect()

    async def main():
        srv = TwinServer(site, tw, pki)
        await srv.start()
        try:
            endpoints = await Client(ep).connect_and_get_server_endpoints()
            assert await none_session_read() == "BadUserAccessDenied"
            assert await borrowed_certificate_read() == "BadUserAccessDenied"
            out = (
                {(e.SecurityPolicyUri.rsplit("#", 1)[1], e.SecurityMode.name) for e in endpoints},
                [await attempt(i) for i in (None, foreign, revoked, good)],
            )
        finally:
            await srv.stop()
        srv = TwinServer(
            site, tw, pki, dev=True
        )  # `serve --dev`: the None endpoint, for development
        await srv.start()
        try:
            return out + (await attempt(None),)
        finally:
            await srv.stop()

    offered, (none, foreign_r, revoked_r, good_r), none_dev = asyncio.run(main())
    assert none_dev.startswith("ok"), none_dev
    assert offered == {
        (p, m)
        for p in ("Basic256Sha256", "Aes128_Sha256_RsaOaep")
        for m in ("Sign", "SignAndEncrypt")
    }
    assert not none.startswith("ok"), none
    assert foreign_r == "BadCertificateUntrusted", foreign_r
    assert revoked_r == "BadCertificateRevoked", revoked_r
    assert good_r.startswith("ok"), good_r


class SteppedClock(Clock):
    """The collector's clock, moved on by its own waits: a reconnect wait of s seconds returns at
    once and the clock reads s seconds later (the wall clock plus every wait so far)."""

    def __init__(self):
        self.offset = 0.0
        self.moved = asyncio.Event()

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def time_ns(self) -> int:
        return time.time_ns() + int(self.offset * 1e9)

    async def wait(self, stop, seconds):
        if not stop.is_set():
            self.offset += seconds
        self.moved.set()
        await asyncio.sleep(0)


def test_server_away_for_a_minute_bad_while_away_then_caught_up_and_nothing_stored_twice(env):
    # the server is stopped for a minute of the collector's clock (its reconnect waits; a real
    # connection attempt each time, refused), then started again
    site, pki, tw, store = env("reconnect_max_s = 5.0")
    published: list[dict] = []
    said: list[str] = []
    clock = SteppedClock()

    async def publish(srv):
        tw.step()
        await srv.publish()
        published.append(_expected(tw, site))

    async def main():
        srv = TwinServer(site, tw, pki)
        await srv.start()
        stop = asyncio.Event()
        col = Collector(site, store, pki, log=said.append, clock=clock)
        task = asyncio.create_task(col.run(stop))
        try:
            await asyncio.wait_for(col.connected.wait(), 20)
            for _ in range(2):
                await publish(srv)
                await _until(col, lambda: _matches(store, tw, site))
            await srv.stop()
            await _until(col, lambda: any(r[10] == "BAD" for r in store.opcua_points()))
            away_from = clock.monotonic()
            while clock.monotonic() - away_from < 60:  # attempts go on, the clock moves
                clock.moved.clear()
                await asyncio.wait_for(clock.moved.wait(), 20)
            assert not col.connected.is_set()
            # while away: BAD rows only, one per variable, no value (nothing invented)
            rows = store.opcua_points()
            assert [r for r in rows if r[10] == "BAD"] == rows[-len(col.vars) :]
            srv = TwinServer(site, tw, pki)
            await srv.start()
            await publish(srv)  # published before the collector is back: its first value
            await asyncio.wait_for(col.connected.wait(), 30)
            await _until(col, lambda: _matches(store, tw, site))
            await publish(srv)
            await _until(col, lambda: _matches(store, tw, site))
        finally:
            stop.set()
            await task
            await srv.stop()
        return col

    col = asyncio.run(main())
    rows = store.opcua_points()
    assert col.sessions == 2
    assert len(rows) == len({(r[4], r[5], r[6]) for r in rows})  # nothing stored twice
    bad = [r for r in rows if r[10] == "BAD"]
    assert len(bad) == len(col.vars) and all(
        r[7] is None and r[8] is None for r in bad
    )  # none invented
    # it said so once when the server went, and how long it was away when it came back
    gone = [m for m in said if "unreachable" in m]
    back = [float(m.split("back after ")[1].split(" s")[0]) for m in said if "back after" in m]
    assert len(gone) == 1 and len(back) == 1 and back[0] >= 60, said
    # every value each publish put on the server is stored (a float tag: the twin's value then)
    stored = {}
    for r in rows:
        stored.setdefault((r[4], r[5]), []).append(r[8] if r[8] is not None else r[7])
    for snap in published:
        for key, want in snap.items():
            assert any(_eq(v, want) for v in stored[key]), (key, want)


def test_points_wait_while_the_store_cannot_commit(env, tmp_path):
    site, pki, tw, store = env()

    async def main():
        srv = TwinServer(site, tw, pki)
        await srv.start()
        stop = asyncio.Event()
        col = Collector(site, store, pki, log=lambda m: None)
        task = asyncio.create_task(col.run(stop))
        blocker = sqlite3.connect(tmp_path / "gt.db", timeout=0, isolation_level=None)
        try:
            await asyncio.wait_for(col.connected.wait(), 20)
            await _until(col, lambda: _matches(store, tw, site))
            store.conn.execute("PRAGMA busy_timeout = 0")
            blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the database
            tw.step()
            await srv.publish()
            loop = asyncio.get_running_loop()
            end = loop.time() + 10
            while not col.flush_errors:  # the flusher tried and is holding the points
                assert loop.time() < end
                await asyncio.sleep(0.05)
            held = len(col.queue)
            blocker.execute("COMMIT")
            await _until(col, lambda: _matches(store, tw, site))
        finally:
            blocker.close()
            stop.set()
            await task
            await srv.stop()
        return held

    held = asyncio.run(main())
    assert held > 0


def test_a_database_from_before_value_bool_takes_boolean_points(tmp_path):
    # opcua_points as the first collector made it (no value_bool column), with a point in it
    SqliteStore(tmp_path / "gt.db").close()
    with sqlite3.connect(tmp_path / "gt.db") as db:
        db.execute(
            "CREATE TABLE opcua_points (enterprise TEXT NOT NULL, site TEXT NOT NULL, area TEXT "
            "NOT NULL, line TEXT NOT NULL, machine TEXT NOT NULL, tag TEXT NOT NULL, ts_ns INTEGER "
            "NOT NULL, value REAL, text TEXT, unit TEXT, quality TEXT NOT NULL, source TEXT, "
            "PRIMARY KEY (enterprise, site, area, line, machine, tag, ts_ns)) WITHOUT ROWID"
        )
        db.execute(
            "INSERT INTO opcua_points VALUES ('A','s','a','l','m','P',1,2.5,NULL,'kW','GOOD','x')"
        )
    store = SqliteStore(tmp_path / "gt.db")
    try:
        path = ("A", "s", "a", "l", "m")
        assert store.write_opcua([(*path, "On", 2, None, None, "", "GOOD", "x", 1)]) == 1
        assert [r[5:8] for r in store.opcua_points()] == [("P", 1, 2.5), ("On", 2, True)]
        assert store.opcua_tags("m") == ["On", "P"]
    finally:
        store.close()


def test_quality_from_status_code_severity():
    assert quality_of(ua.StatusCodes.Good) == "GOOD"
    assert quality_of(ua.StatusCodes.UncertainLastUsableValue) == "UNCERTAIN"
    assert quality_of(ua.StatusCodes.BadOutOfService) == "BAD"
    assert (
        model.quality("tripped:overload") == "UNCERTAIN" and model.quality("unconnected") == "BAD"
    )
    assert model.unit_id("kW") == (ord("K") << 16) | (ord("W") << 8) | ord("T")


def test_influxdb_outage_spools_opcua_telemetry_and_replays_in_order(env, influxdb):
    from gridtwin.daemon.store_influx import InfluxConfig, InfluxWriter, SpoolForwarder

    # a utility: its 0/1 flags (energized, on) are Boolean variables -> value_bool
    site, pki, tw, store = env('\n[[twin.components]]\nid = "util1"\nkind = "utility"\n')
    influxdb.stop()  # InfluxDB is away while the points arrive

    async def main():
        srv = TwinServer(site, tw, pki)
        await srv.start()
        stop = asyncio.Event()
        col = Collector(site, store, pki, influx=True, log=lambda m: None)
        task = asyncio.create_task(col.run(stop))
        try:
            await asyncio.wait_for(col.connected.wait(), 20)
            for _ in range(3):
                tw.step()
                await srv.publish()
                await _until(col, lambda: _matches(store, tw, site))
            await srv.stop()  # the server goes away: BAD points, spooled like the rest
            await _until(col, lambda: any(r[10] == "BAD" for r in store.opcua_points()))
        finally:
            stop.set()
            await task
            await srv.stop()

    asyncio.run(main())
    rows = store.opcua_points()
    assert store.spool_depth() == len(rows)  # every point waits in the spool
    # SQLite: a Boolean is True/False, not a number or text
    flags = [r for r in rows if r[4] == "util1" and r[5] in ("energized", "on")]
    good = [r for r in flags if r[10] == "GOOD"]
    assert good and all(r[7] is True and r[8] is None for r in good), flags
    assert all(r[7] is None and r[8] is None for r in flags if r[10] == "BAD")  # never invented
    influxdb.start()
    fwd = SpoolForwarder(
        store, InfluxWriter(InfluxConfig(url=influxdb.url, api="v1", bucket=influxdb.db))
    )
    fwd.start()
    try:
        for _ in range(200):  # the forwarder signals nothing: watch the spool drain
            if store.spool_depth() == 0:
                break
            fwd.wake.set()
            time.sleep(0.05)
        assert store.spool_depth() == 0
    finally:
        fwd.stop()
    [series] = influxdb.query(
        'SELECT value_float, quality, enterprise, area, "line" FROM opcua_telemetry '
        "WHERE machine='inv1' AND \"tag\"='Power_Active'"
    )  # TAG is an InfluxQL keyword
    want = [(r[6] // 1_000_000, r[7]) for r in rows if r[4] == "inv1" and r[5] == "Power_Active"]
    got = [(v[0], v[1]) for v in series["values"]]
    assert got == want and len(got) >= 3
    assert {tuple(v[2:]) for v in series["values"]} == {
        (q, "Acme", "energy", "meter1") for q in ("GOOD", "BAD")
    }
    [state] = influxdb.query(
        "SELECT value_string FROM opcua_telemetry WHERE \"tag\"='Inverter_State'"
    )
    assert {v[1] for v in state["values"]} <= {"mppt", "clipping", "standby"}
    [flag] = influxdb.query(
        "SELECT value_bool, value_float FROM opcua_telemetry WHERE machine='util1' "
        "AND \"tag\"='energized'"
    )
    assert {tuple(v[1:]) for v in flag["values"]} == {(True, None)}, flag
    # the Grafana dashboard of OPC UA points (a site with [[opcua.sources]]): every panel selects
    # some of what InfluxDB now holds (the stack's own checker of Flux filters)
    from test_stack_catalog import flux_filters, selects

    from gridtwin.stack import grafana

    [everything] = influxdb.query("SELECT * FROM opcua_telemetry")
    cols = everything["columns"]
    rows = []
    for values in everything["values"]:
        point = dict(zip(cols, values))
        for field in ("quality", "value_float", "value_string", "value_bool"):
            if point.get(field) is not None:
                tags = {
                    k: point[k] for k in ("enterprise", "site", "area", "line", "machine", "tag")
                }
                rows.append(
                    {"_measurement": "opcua_telemetry", "_field": field, "_value": point[field]}
                    | tags
                )
    assert "opcua" not in grafana.dashboards(site)  # no sources: the daemon collects nothing
    src = env(
        '\n[[opcua.sources]]\nendpoint = "opc.tcp://127.0.0.1:{port}/gridtwin"\n', name="src.toml"
    )[0]
    dash = grafana.dashboards(src)["opcua"]
    bucket = src.storage.influx_bucket
    for panel in dash["panels"]:
        [target] = panel["targets"]
        filters = flux_filters(target["query"], bucket)[0]
        chosen = [r for r in rows if all(selects(f, r) for f in filters)]
        assert chosen, panel["title"]
        if panel["title"] == "battery":
            assert {(r["machine"], r["tag"]) for r in chosen} == {("bess1", "SoC")}
        if panel["title"].startswith("points not GOOD"):
            assert {r["_value"] for r in chosen} == {"BAD"}


def test_status_codes_carry_the_components_quality(env):
    # a utility (any other twin kind is served by its metric names): a fault is BadOutOfService ->
    # BAD
    site, pki, tw, store = env('\n[[twin.components]]\nid = "util1"\nkind = "utility"\n')

    def quality(tag):
        rows = [r for r in store.opcua_points("util1", tag)]
        return rows[-1][10] if rows else None

    async def main():
        srv = TwinServer(site, tw, pki)
        await srv.start()
        stop = asyncio.Event()
        col = Collector(site, store, pki, log=lambda m: None)
        task = asyncio.create_task(col.run(stop))
        seen = []
        try:
            await asyncio.wait_for(col.connected.wait(), 20)
            await _until(col, lambda: quality("State") == "GOOD")
            seen.append(store.opcua_points("util1", "State")[-1][8])
            tw.apply("util1", "set_fault", {"on": True})
            tw.step()
            await srv.publish()
            await _until(col, lambda: quality("State") == "BAD" and quality("on") == "BAD")
            seen.append(store.opcua_points("util1", "State")[-1][8])
            tw.apply("util1", "set_fault", {"on": False})
            tw.step()
            await srv.publish()
            await _until(col, lambda: quality("State") == "GOOD")
        finally:
            stop.set()
            await task
            await srv.stop()
        return seen

    # OPC UA Part 4, 7.7.1: a Bad value is null; the row keeps the quality and no value (none is
    # invented)
    assert asyncio.run(main()) == ["ok", None]
    bad = [r for r in store.opcua_points("util1") if r[10] == "BAD"]
    assert bad and all(r[7] is None and r[8] is None for r in bad)
    assert {r[5] for r in bad} == {
        r[5] for r in store.opcua_points("util1")
    }  # every tag of the machine


def _mapping_site(env, points, port=None, name="site.toml"):
    rows = ",\n".join(f'  {{ path = "{p}", tag = "{t}", node = "{n}" }}' for p, t, n in points)
    return env(
        '\n[[opcua.sources]]\nendpoint = "opc.tcp://127.0.0.1:{port}/gridtwin"\n'
        f'policy = "Aes128_Sha256_RsaOaep"\npoints = [\n{rows}\n]\n',
        port=port,
        name=name,
    )


def test_a_source_mapping_stores_under_its_isa95_path_and_a_bad_mapping_names_the_key(
    env, tmp_path
):
    from gridtwin.errors import ConfigError

    ns = "ns=2;s=Acme.mg.energy.meter1."
    good = [
        ("Plant/north/energy/feeder1/pv-a", "Power_Active", ns + "inv1.Power_Active"),
        ("Plant/north/energy/feeder1/pv-a", "Mode", ns + "inv1.Inverter_State"),
        ("Plant/north/energy/pcc/meter", "Import", ns + "meter1.Energy_Import"),
    ]
    bad = {
        "unknown": (ns + "inv1.Nope", "no such node"),
        "object": (ns + "inv1", "not a variable"),
        "wrong type": ("ns=0;i=2256", "holds a i=862, not a number, boolean or string"),
    }
    site, pki, tw, store = _mapping_site(env, good)
    port = int(site.opcua.endpoint.rsplit(":", 1)[1].split("/")[0])
    errors = {}

    async def main():
        srv = TwinServer(site, tw, pki)
        await srv.start()
        try:
            stop = asyncio.Event()
            col = Collector(site, store, pki, log=lambda m: None, source=0)
            task = asyncio.create_task(col.run(stop))
            await asyncio.wait_for(col.connected.wait(), 20)
            await _until(col, lambda: len({r[5] for r in store.opcua_points()}) == 3)
            stop.set()
            await task
            for name, (
                node,
                _problem,
            ) in bad.items():  # the same server, a site with one bad row each
                bsite = _mapping_site(
                    env, good[:1] + [("P/s/a/l/m", "X", node)], port=port, name=f"{name}.toml"
                )[0]
                with pytest.raises(ConfigError) as e:
                    await Collector(bsite, store, pki, log=lambda m: None, source=0).run(
                        asyncio.Event()
                    )
                errors[name] = e.value
        finally:
            await srv.stop()

    asyncio.run(main())
    got = {(r[4], r[5]): r for r in store.opcua_points()}
    assert set(got) == {("pv-a", "Power_Active"), ("pv-a", "Mode"), ("meter", "Import")}
    st = tw.state()
    assert got[("pv-a", "Power_Active")][7] == pytest.approx(st["inv1"]["m"]["p_kw"], rel=1e-9)
    assert got[("pv-a", "Power_Active")][9] == "kW" and got[("meter", "Import")][9] == "kWh"
    assert got[("pv-a", "Mode")][8] == st["inv1"]["status"]
    assert got[("meter", "Import")][:4] == ("Plant", "north", "energy", "pcc")
    for name, (node, problem) in bad.items():
        err = errors[name]
        assert err.key == "opcua.sources[0].points[1].node" and err.file.endswith(f"{name}.toml"), (
            name
        )
        assert problem in err.problem and "gridtwin opcua browse" in err.fix, (name, str(err))


def test_the_collector_refuses_a_server_the_site_ca_did_not_sign(env, tmp_path):
    site, pki, tw, store = env()
    foreign = PKI(tmp_path / "foreign")
    foreign.init()
    said = []

    async def main():
        spoke = asyncio.Event()
        srv = TwinServer(site, tw, foreign)  # a server with another CA's certificate ...
        await srv.start()
        # ... that would take our collector (so the refusal seen is the collector's own)
        srv.server.iserver.certificate_validator = certs.validator(pki, "client")
        stop = asyncio.Event()
        col = Collector(site, store, pki, log=lambda m: (said.append(m), spoke.set()))
        task = asyncio.create_task(col.run(stop))
        try:
            await asyncio.wait_for(spoke.wait(), 20)  # its first attempt ends in one line
        finally:
            stop.set()
            await task
            await srv.stop()
        return col

    col = asyncio.run(main())
    assert col.sessions == 0 and not col.vars and store.opcua_points() == []
    assert "unreachable (BadCertificateUntrusted" in said[0] and said[0].endswith(
        "points BAD, reconnecting"
    ), said
