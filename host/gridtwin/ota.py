"""Over-the-air updates, the host's side (protocol, messages and states: docs/ota.md).

``build_release(site, node)`` builds what `gridtwin deploy` would put on the node's board (the
same build: ``deploy.build``) minus what stays on the board (certificates, boot.py with its version
selector, main.py), and a manifest (version, files with size and SHA-256). ``Updater`` sends
releases over one MQTT session of the OTA identity (``gridtwin-ota``, the only one the broker's
ACL lets write a node's ``ota`` topic): the manifest and the files as one stream of chunks, each
acknowledged by the node with the offset it wants next, so a lost chunk, a lost link or a reboot
resumes where the node's flash is. Then it waits for the node's birth: confirmed, or rolled back
and why.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pathlib
import queue
import random
import re
import threading
import time
from dataclasses import dataclass, field

from gridtwin.errors import GridTwinError, ToolError
from gridtwin.pki import OTA_IDENTITY
from gridtwin.resources import FIRMWARE_DIR

CHUNK = 1024  # data bytes per chunk, at most what the node's acks say it takes
WINDOW = 4  # chunks in flight before the node's ack for the first
ACK_TIMEOUT = 2.0  # s without an ack: ask the node where it is (begin again: it resumes)
# a node that answers "busy" (no RAM for the transfer just now: a transient refusal) is asked
# again after 1, 2, 4, 8 s; what it received stays on its flash, so each try resumes
BUSY_TRIES = 4
BUSY_BACKOFF = 1.0
TRIAL_S = 120  # how long a new version has to come up healthy before the node rolls it back
# what stays on the board across updates: its identity, and the two files outside every version
# (boot.py picks the version; main.py starts it)
KEEP_ON_BOARD = ("ca.der", "cert.der", "key.der", "boot.py", "main.py")
LOCK_FILE = "ota.lock"  # under the site's var dir: the one `gridtwin ota` running


@contextlib.contextmanager
def single_run(site, who: str = "gridtwin ota"):
    """Hold the site's OTA lock while the block runs, or fail naming who holds it.

    Every `gridtwin ota` (and `gridtwin deploy --wait` without a daemon: ``who``) connects as the
    one OTA identity, and the broker makes the identity the client id: a second session takes the
    first one's over, and both reconnect and kick each other off. The lock is an flock on
    ``<var>/ota.lock`` (the kernel drops it when the holder ends, however it ends: a stale file of
    a dead pid is simply taken over); the file says who holds it."""
    import fcntl
    import os

    path = pathlib.Path(site.var_dir) / LOCK_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+")
    except OSError as exc:
        raise ToolError(
            f"cannot open the OTA lock {path}: {exc.strerror}",
            hint="check the permissions of the site's var folder",
        ) from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        # "<pid> <date> <time> <who>" (no <who> in files written before deploy took the lock)
        pid, day, clock, holder = (f.read().strip().split(" ", 3) + ["", "", "", ""])[:4]
        f.close()
        since = f"{day} {clock}".strip()
        raise ToolError(
            f"another {holder or 'gridtwin ota'} is running (pid {pid or 'unknown'}, since "
            f"{since or 'an unknown time'}; lock {path}): both would use the one "
            f"{OTA_IDENTITY} session and take it from each other",
            hint="wait for it to end, or stop it",
        ) from None
    try:
        f.truncate(0)
        f.write(f"{os.getpid()} {time.strftime('%Y-%m-%d %H:%M:%S')} {who}\n")
        f.flush()
        yield path
    finally:
        with contextlib.suppress(OSError):
            f.truncate(0)  # (not removed: another run may have it open already)
        f.close()


def ota_client(pki, host: str, port: int, root: str):
    """A paho client (clean session) of the OTA identity, which may write the nodes' update topics
    and read their status; its certificate is issued on first use (a new identity, nothing
    replaced). Hold `single_run` while it is connected."""
    from gridtwin.daemon.connection import Endpoint

    if not pki.has(OTA_IDENTITY):
        pki.issue(OTA_IDENTITY)
    return Endpoint.of(pki, OTA_IDENTITY, host, port, root).client(OTA_IDENTITY, v5=False)


def firmware_version(firmware_dir: pathlib.Path = FIRMWARE_DIR) -> str:
    """gt.VERSION, read from the firmware's source (its one home)."""
    text = (pathlib.Path(firmware_dir) / "gt" / "__init__.py").read_text()
    m = re.search(r'^VERSION = "([^"]+)"', text, re.M)
    return m[1] if m else "unknown"


@dataclass
class Release:
    node: str
    version: str
    kind: str  # "full" (firmware and config) or "config"
    manifest: bytes
    files: list[tuple[str, bytes]]  # (path on the board, content), in the manifest's order

    @property
    def stream(self) -> bytes:
        return self.manifest + b"".join(data for _name, data in self.files)

    @property
    def size(self) -> int:
        return len(self.manifest) + sum(len(d) for _n, d in self.files)


def release_from_files(
    node: str, files: dict[str, pathlib.Path], *, config_only: bool = False, fw_version: str = ""
) -> Release:
    """A release of these board files ({board path: local file}). The version is the firmware's
    plus a hash of the content, so two builds of the same files are the same version."""
    names = sorted(n for n in files if n not in KEEP_ON_BOARD)
    if config_only:
        names = [n for n in names if n == "config.json"]
    if not names:
        raise ToolError(f"{node}: nothing to send (no firmware files and no config.json)")
    content = [(n, pathlib.Path(files[n]).read_bytes()) for n in names]
    entries = [[n, len(d), hashlib.sha256(d).hexdigest()] for n, d in content]
    digest = hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:8]
    version = f"{fw_version or firmware_version()}+{digest}"
    kind = "config" if config_only else "full"
    # a JSON line, then a line per file: the node reads it a line at a time (RAM)
    head = json.dumps(
        {"v": version, "node": node, "kind": kind, "n": len(entries)}, separators=(",", ":")
    )
    manifest = "\n".join([head] + [f"{size} {sha} {n}" for n, size, sha in entries]) + "\n"
    manifest = manifest.encode()
    return Release(node, version, kind, manifest, content)


def build_release(
    site, node_id: str, out_dir: pathlib.Path, *, config_only: bool = False, **build_kw
) -> Release:
    """The node's release, from the same build `gridtwin deploy` makes (``deploy.build``)."""
    from gridtwin import deploy

    files = deploy.build(site, node_id, pathlib.Path(out_dir), out=lambda *_: None, **build_kw)
    fw = build_kw.get("firmware_dir", FIRMWARE_DIR)
    return release_from_files(
        node_id, files, config_only=config_only, fw_version=firmware_version(fw)
    )


@dataclass
class Result:
    node: str
    version: str
    ok: bool = False
    state: str = "pending"  # confirmed, current, rolled_back, refused, busy, failed, expired
    why: str = ""
    bytes_sent: int = 0  # chunk payload bytes published (resends included)
    messages: int = 0
    seconds: float = 0.0  # from the first message to the confirmation
    transfer_s: float = 0.0  # from begin to the node's switch
    resumes: int = 0

    def line(self) -> str:
        if self.ok:
            what = "already runs" if self.state == "current" else "confirmed"
            return (
                f"{self.node}: {what} {self.version} ({self.bytes_sent} bytes, {self.seconds:.1f} "
                "s)"
            )
        return f"{self.node}: {self.state}: {self.why}"


class _Node:
    def __init__(self, release: Release, result: Result):
        self.rel = release
        self.res = result
        self.acks: queue.Queue = queue.Queue()
        self.births: queue.Queue = queue.Queue()


@dataclass
class Updater:
    """One MQTT session (``client``: a connected paho client of the OTA identity, loop running,
    or made by ``connect``) that updates nodes. ``update(releases)`` runs them concurrently."""

    client: object
    root: str
    window: int = WINDOW
    chunk: int = CHUNK
    trial_s: int = TRIAL_S
    ack_timeout: float = ACK_TIMEOUT
    busy_tries: int = BUSY_TRIES
    busy_backoff: float = BUSY_BACKOFF  # s before the first try again; doubles each time
    say: object = None  # fn(line) for what the run does meanwhile (a node's retries)
    _nodes: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        self.client.on_message = self._on_message
        self.stop = threading.Event()

    @classmethod
    def connect(cls, pki, host: str, port: int, root: str, **kw) -> "Updater":
        c = ota_client(pki, host, port, root)
        ready, sub = threading.Event(), threading.Event()

        def on_connect(client, userdata, flags, rc, props):
            # on every connect: a clean session forgets the subscriptions when the link drops
            if not rc.is_failure:
                client.subscribe([(f"{root}/+/ota/ack", 0), (f"{root}/+/status", 1)])
            ready.set()

        c.on_connect = on_connect
        c.on_subscribe = lambda *a: sub.set()
        _connect(c, host, port)
        if not ready.wait(10):
            c.loop_stop()
            raise ToolError(f"the broker at {host}:{port} did not accept {OTA_IDENTITY}")
        if not sub.wait(10):
            c.loop_stop()
            raise ToolError(f"the broker at {host}:{port} took no subscription of {OTA_IDENTITY}")
        return cls(c, root, **kw)

    def close(self) -> None:
        self.stop.set()
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    # --- messages from the nodes -----------------------------------------------------------------
    def _on_message(self, client, userdata, msg) -> None:
        parts = msg.topic[len(self.root) + 1 :].split("/")
        with self._lock:
            n = self._nodes.get(parts[0])
        if n is None:
            return
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        if parts[1:] == ["ota", "ack"]:
            n.acks.put(doc)
        elif parts[1:] == ["status"] and not msg.retain and isinstance(doc, dict):
            n.births.put(doc)

    # --- sending ---------------------------------------------------------------------------------
    def _pub(self, node: str, payload: bytes, qos: int) -> None:
        self.client.publish(f"{self.root}/{node}/ota", payload, qos)

    def update(self, releases: list[Release], *, expire_s: float = 600.0) -> list[Result]:
        results = [Result(r.node, r.version) for r in releases]
        threads = []
        for rel, res in zip(releases, results):
            n = _Node(rel, res)
            with self._lock:
                self._nodes[rel.node] = n
            t = threading.Thread(target=self._run, args=(n, expire_s), daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        return results

    def _run(self, n: _Node, expire_s: float) -> None:
        t0 = time.monotonic()
        try:
            self._send(n, t0 + expire_s)
        except GridTwinError as exc:
            n.res.state, n.res.why = "failed", str(exc)
        n.res.seconds = time.monotonic() - t0
        n.res.ok = n.res.state in ("confirmed", "current")

    def _send(self, n: _Node, deadline: float) -> None:
        rel, res = n.rel, n.res
        node = rel.node
        rid = random.getrandbits(31)
        tag = rid.to_bytes(4, "big")
        stream = rel.stream
        size = len(stream)
        begin = json.dumps(
            {
                "op": "begin",
                "id": rid,
                "v": rel.version,
                "mlen": len(rel.manifest),
                "msha": hashlib.sha256(rel.manifest).hexdigest(),
                "size": size,
                "trial_s": self.trial_s,
            },
            separators=(",", ":"),  # the node takes it into its 256 B receive buffer
        ).encode()
        # where the node is first: an offline node answers when it is back (QoS 1 waits for it)
        self._pub(node, b'{"op":"status"}', 1)
        a = self._ack(n, deadline, "its first answer")
        if a.get("v") == rel.version and a.get("ota") == "confirmed":
            res.state = "current"
            return
        self._pub(node, begin, 1)
        t_begin = time.monotonic()
        chunk = self.chunk
        base = sent = 0  # acknowledged up to base; sent up to sent
        rewound_at = -1
        bad = busy = 0
        switch = b"\1" + tag  # every file is in: the node checks them again and switches
        asked = False  # the switch asked for since the last begin
        while True:
            try:
                a = self._ack(n, min(deadline, time.monotonic() + self.ack_timeout), "")
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise ToolError(f"{node}: no answer within the deadline; the update expired")
                res.resumes += 1
                asked = False
                self._pub(node, begin, 1)  # the node says where it is and we go on from there
                continue
            st = a.get("st")
            if st == "busy":
                # no RAM for the transfer just now: asked again after a pause (it resumes)
                busy += 1
                if busy > self.busy_tries:
                    res.state = "busy"
                    res.why = f"refused {busy} times for want of RAM ({a.get('why')})"
                    return
                wait = self.busy_backoff * 2 ** (busy - 1)
                if self.say:
                    self.say(
                        f"{node}: busy ({a.get('why')}): trying again in {wait:g} s "
                        f"({busy} of {self.busy_tries})"
                    )
                if self.stop.wait(min(wait, max(0.0, deadline - time.monotonic()))):
                    raise ToolError(f"{node}: stopped while waiting to try again")
                while not n.acks.empty():  # (answers to what was sent before the pause)
                    n.acks.get_nowait()
                base = sent = 0
                rewound_at = -1
                res.resumes += 1
                asked = False
                self._pub(node, begin, 1)
                continue
            if st in ("refused", "err"):
                res.state, res.why = ("refused" if st == "refused" else "failed"), a.get("why")
                return
            if a.get("id") != rid:
                if st == "idle":  # a reset or a fresh module: begin again, it resumes from flash
                    res.resumes += 1
                    asked = False
                    self._pub(node, begin, 1)
                continue
            if st == "switch":
                res.transfer_s = time.monotonic() - t_begin
                break
            off = int(a.get("off", 0))
            chunk = min(self.chunk, int(a.get("chunk", chunk)))
            if st == "bad":
                bad += 1
                if bad > 3:
                    res.state, res.why = "failed", f"refused the same data 4 times: {a.get('why')}"
                    self._pub(node, json.dumps({"op": "abort", "id": rid}).encode(), 1)
                    return
                sent = base = rewound_at = off
            elif off > base:
                base = off
                sent = max(sent, base)
            elif off == base and off < sent and off != rewound_at:
                sent = rewound_at = off  # a chunk went missing: from where the node is
            while sent < size and sent - base < self.window * chunk:
                data = stream[sent : sent + chunk]
                self._pub(node, b"\0" + tag + sent.to_bytes(4, "big") + data, 0)
                res.bytes_sent += len(data)
                res.messages += 1
                sent += len(data)
            if st == "recv" and off >= size and not asked:
                asked = True  # (its answer lost: the begin after the pause asks where it is)
                self._pub(node, switch, 1)
        # switched: the node resets into its trial; its births say how it went
        while True:
            left = deadline - time.monotonic()
            try:
                b = n.births.get(timeout=max(0.0, min(left, 1.0)))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    raise ToolError(
                        f"{node}: switched to {rel.version}, but no confirmation before the "
                        "deadline (see `gridtwin ota status`)"
                    ) from None
                continue
            o = b.get("ota") or {}
            if o.get("v") == rel.version and o.get("st") == "confirmed":
                res.state = "confirmed"
                return
            if o.get("st") == "rolled_back" and o.get("bad") == rel.version:
                res.state, res.why = "rolled_back", f"back on {o.get('v')}: {o.get('why')}"
                return

    def _ack(self, n: _Node, until: float, what: str) -> dict:
        while True:
            left = until - time.monotonic()
            if left <= 0 or self.stop.is_set():
                if what:
                    raise ToolError(
                        f"{n.rel.node}: no answer ({what}) in time: offline? The update expired; "
                        "run it again when the node is back"
                    )
                raise TimeoutError
            try:
                return n.acks.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue


def staged(updater: Updater, releases: list[Release], canary: int, out=print, **kw) -> list[Result]:
    """Canaries first (the first ``canary`` releases); the rest only when every canary confirmed."""
    if canary <= 0:
        return updater.update(releases, **kw)
    first = updater.update(releases[:canary], **kw)
    for r in first:
        out(r.line())
    if not all(r.ok for r in first):
        stopped = [
            Result(r.node, r.version, state="stopped", why="a canary failed: not sent")
            for r in releases[canary:]
        ]
        return first + stopped
    return first + updater.update(releases[canary:], **kw)


def _connect(client, host: str, port) -> None:
    """Connect and start the client's network thread, or say the broker is not there."""
    try:
        client.connect(host, int(port), keepalive=30)
    except OSError as exc:
        raise ToolError(
            f"cannot reach the broker at {host}:{port}: {exc}",
            hint="start it (`gridtwin broker run`)",
        ) from None
    client.loop_start()


def fleet_status(pki, host: str, port: int, root: str, timeout: float = 10.0) -> dict[str, dict]:
    """Every node's retained status (birth, health or will), by node id, as the broker holds it."""
    c = ota_client(pki, host, port, root)
    got: dict[str, dict] = {}
    done = threading.Event()
    lock = threading.Lock()

    def on_connect(client, userdata, flags, rc, props):
        if rc.is_failure:
            done.set()
        else:
            client.subscribe(f"{root}/+/status", 1)

    subacks = []

    def on_subscribe(client, userdata, mid, rcs, props):
        subacks.append(mid)
        if len(subacks) == 1:
            # the broker sends the retained messages right after the first SUBACK; a second
            # subscription's SUBACK comes after them all
            client.subscribe(f"{root}/_status_done/ota/ack", 0)
        else:
            done.set()

    def on_message(client, userdata, msg):
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        node = msg.topic[len(root) + 1 :].split("/")[0]
        if isinstance(doc, dict):
            with lock:
                # a health document updates the birth's fields, it does not replace them
                got[node] = {**got.get(node, {}), **doc}

    c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
    _connect(c, host, port)
    try:
        if not done.wait(timeout):
            raise ToolError(f"no answer from the broker at {host}:{port} within {timeout:g} s")
    finally:
        c.disconnect()
        c.loop_stop()
    return got


def status_rows(site_nodes: list[str], docs: dict[str, dict]) -> list[list[str]]:
    rows = [["node", "state", "fw", "ota version", "ota state", "why"]]
    for n in site_nodes:
        d = docs.get(n, {})
        o = d.get("ota") or {}
        rows.append(
            [
                n,
                d.get("state", "never seen"),
                str(d.get("fw", "-")),
                str(o.get("v") or "-"),
                str(o.get("st") or ("none" if d.get("fw") else "-")),
                str(o.get("why") or ""),
            ]
        )
    return rows
