"""Commands to nodes and their acknowledgements.

The daemon is the only client with the host identity (the broker maps the certificate to the
client id, so a second connection would take over the daemon's session); commands therefore go
through it: in-process with ``daemon.dispatcher.send(...)``, from the CLI through the daemon's
local HTTP API (``POST /cmd``), see gridtwin.commands.cmd.

``send`` publishes ``{"id","cmd","args","ts"}`` to ``<root>/<node>/cmd`` at QoS 1 with a fresh id,
waits for the ack with that id (acks come in through ingest), stores the history, and returns the
ack. A node known to be offline is waited for up to ``ttl`` seconds before the command is sent;
commands are never queued in the broker for later, so a command cannot fire hours after the user
gave up on it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

from gridtwin.daemon.bus import NotConnected
from gridtwin.errors import CommandTimeout, GridTwinError


class NodeOffline(CommandTimeout):
    """The node stayed offline for the whole TTL; the command was not sent."""


class Dispatcher:
    def __init__(self, bus, store, known_nodes=None):
        self.bus, self.store, self.root = bus, store, bus.root
        self.known = set(known_nodes) if known_nodes else None
        self._cond = threading.Condition()
        self._acks: dict[str, dict] = {}
        self._waiting: set[str] = set()
        self._online: dict[str, bool] = {r["id"]: r.get("state") == "online" for r in store.nodes()}

    # called by ingest after each committed batch (writer thread)
    def on_batch(self, statuses, acks) -> None:
        if not statuses and not acks:
            return
        with self._cond:
            for node, st in statuses:
                self._online[node] = st.get("state") == "online"
            for node, a in acks:
                if a["id"] in self._waiting:
                    self._acks[a["id"]] = {**a, "node": node}
            self._cond.notify_all()

    def is_online(self, node: str) -> bool:
        with self._cond:
            return self._online.get(node, False)

    def send(
        self, node: str, cmd: str, args: dict | None = None, timeout: float = 10.0, ttl: float = 0.0
    ) -> dict:
        """Send one command and return its ack ``{"id","ok","result"?,"err"?,"ts"?,"node"}``.

        Raises NodeOffline (offline for the whole ``ttl``), CommandTimeout (no ack within
        ``timeout`` after sending) or GridTwinError (unknown node, broker not connected)."""
        if self.known is not None and node not in self.known:
            raise GridTwinError(f"no node '{node}' in the site", hint="see `gridtwin nodes`")
        args = args or {}
        cid = uuid.uuid4().hex[:12]
        self.store.command_created(cid, node, cmd, args)
        with self._cond:
            self._waiting.add(cid)
            if not self._cond.wait_for(lambda: self._online.get(node, False), timeout=ttl):
                self._waiting.discard(cid)
                self.store.command_update(cid, "offline")
                raise NodeOffline(
                    f"{node} is offline; command '{cmd}' not sent (waited {ttl:g} s)",
                    hint="power the node up, or pass a longer --ttl to wait for it",
                )
        payload = json.dumps({"id": cid, "cmd": cmd, "args": args, "ts": int(time.time() * 1000)})
        try:
            info = self.bus.publish(f"{self.root}/{node}/cmd", payload, qos=1)
        except NotConnected:
            self._waiting.discard(cid)
            self.store.command_update(cid, "error", err="daemon not connected to the broker")
            raise GridTwinError(
                "the daemon is not connected to the broker; command not sent",
                hint="see `gridtwin daemon` logs and `gridtwin doctor`",
            ) from None
        self.store.command_update(cid, "sent", sent=int(time.time() * 1000))
        with self._cond:
            got = self._cond.wait_for(lambda: cid in self._acks, timeout=timeout)
            self._waiting.discard(cid)
            ack = self._acks.pop(cid, None)
        if not got:
            self.store.command_update(cid, "timeout")
            try:
                confirmed = info.is_published()
            except (RuntimeError, ValueError):  # paho raises when the publish found no connection
                confirmed = False
            published = "" if confirmed else " (the broker did not confirm the publish either)"
            raise CommandTimeout(
                f"{node} did not acknowledge '{cmd}' (id {cid}) within {timeout:g} s{published}",
                hint="the node may be busy or not handle this command; see `gridtwin tail` and its "
                "log",
            )
        return ack
