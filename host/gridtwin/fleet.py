"""Virtual nodes of a site: each node's real firmware on a virtual board, wired to the broker.

``VirtualNode(site, pki, node_id, root, broker=(host, port), speed=1.0)`` prepares a board folder
as `gridtwin deploy` prepares a board: the node's config.json (rendered from the site and its board
file, pointed at the given broker), its DER certificate and key and the site CA on flash. Its
world (``gridtwin.vworld.world_for``) provides the chips of the node's sensors, every measured
quantity read from ``live.json`` beside the board, which ``feed()`` rewrites atomically — the twin
writes what the plant measures and the firmware reads it through its own drivers.

``VirtualFleet`` does this for many nodes, compiling the firmware once (boards run the .mpy build,
as deployed boards do).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import time

from gridtwin.micropython import compile_firmware
from gridtwin.nodeconfig import render
from gridtwin.vboard import NODE_HEAP, VirtualBoard
from gridtwin.vworld import world_for


class VirtualNode:
    def __init__(self, site, pki, node_id: str, root: os.PathLike | str, *, broker: tuple[str, int],
                 firmware_dir: pathlib.Path, speed: float = 1.0, heap: str = NODE_HEAP,
                 server_hostname: str = "localhost", world_extra: dict | None = None):
        self.id = node_id
        self.root = pathlib.Path(root)
        self.live_path = self.root / "live.json"
        cfg = render(site, node_id)
        mqtt = dict(cfg.get("mqtt", {}))
        mqtt.update({"host": broker[0], "port": broker[1], "server_hostname": server_hostname})
        cfg["mqtt"] = mqtt
        self.config = cfg
        now = int(time.time())
        world = world_for(cfg, live_prefix="", clock={"mode": "real", "speed": speed, "rtc": None, "true": now})
        world["live"] = str(self.live_path.resolve())
        world.update(world_extra or {})
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.live_path.exists():
            self.live_path.write_text("{}")
        self.board = VirtualBoard(self.root, config=cfg, world=world, firmware=firmware_dir, heap=heap)
        self.board.install_identity(pki, node_id)

    def feed(self, values: dict) -> None:
        """Replace what the node's chips measure (keys as world_for names them)."""
        tmp = self.live_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(values))
        os.replace(tmp, self.live_path)  # the shim never sees half a file

    def start(self) -> "VirtualNode":
        self.board.start()
        return self

    def stop(self) -> None:
        self.board.stop()


class VirtualFleet:
    def __init__(self, site, pki, root: os.PathLike | str, *, broker: tuple[str, int],
                 nodes: list[str] | None = None, speed: float = 1.0, heap: str = NODE_HEAP):
        self.root = pathlib.Path(root)
        fw = self.root / "firmware"
        if fw.exists():
            shutil.rmtree(fw)
        compile_firmware(fw)
        ids = nodes if nodes is not None else site.node_ids
        self.nodes = {n: VirtualNode(site, pki, n, self.root / n, broker=broker, firmware_dir=fw,
                                     speed=speed, heap=heap) for n in ids}

    def start(self) -> None:
        for n in self.nodes.values():
            n.start()

    def stop(self) -> None:
        for n in self.nodes.values():
            n.stop()

    def feed(self, values: dict[str, dict]) -> None:
        for node_id, v in values.items():
            node = self.nodes.get(node_id)
            if node is not None:
                node.feed(v)
