"""Virtual nodes of a site: each node's real firmware on a virtual board, wired to the broker.

``VirtualNode(site, pki, node_id, root, broker=(host, port), speed=1.0)`` prepares a board folder
as `gridtwin deploy` prepares a board: the node's config.json (rendered from the site and its board
file, pointed at the given broker), its DER certificate and key and the site CA on flash. Its
world (``gridtwin.vworld.world_for``) provides the chips of the node's sensors, every measured
quantity read from ``live.json`` beside the board, which ``feed()`` rewrites atomically — the twin
writes what the plant measures and the firmware reads it through its own drivers.

``VirtualFleet`` does this for many nodes, compiling the firmware once (boards run the .mpy build,
as deployed boards do).

Every board of a fleet keeps one clock: its true time (what NTP tells it, so its readings' ts) is
``epoch + (host time - epoch) x speed``, the same instant on every board whenever each started, so
``fleet.host_time(ts)`` says when on the host's clock a reading was taken. A fleet's plant-role node
is wired to a HIL bench (gridtwin.vworld.plant_hil: params "hil"), so the twin drives what it
reports (a lone VirtualNode, as `gridtwin vnode` runs it, is not: it obeys commands). With a
``seed`` every chip adds its data sheet's noise (gridtwin.vworld.CHIPS), its own stream per sensor.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import time

from gridtwin.micropython import compile_firmware
from gridtwin.nodeconfig import render
from gridtwin.site import PLANT_ROLES
from gridtwin.vboard import NODE_HEAP, VirtualBoard, hold_folder, release_folder
from gridtwin.vworld import plant_hil, world_for


class VirtualNode:
    def __init__(
        self,
        site,
        pki,
        node_id: str,
        root: os.PathLike | str,
        *,
        broker: tuple[str, int],
        firmware_dir: pathlib.Path,
        speed: float = 1.0,
        heap: str = NODE_HEAP,
        server_hostname: str = "localhost",
        world_extra: dict | None = None,
        epoch: float | None = None,
        seed: int | None = None,
        hil: bool = False,
    ):
        self.id = node_id
        self.root = pathlib.Path(root)
        self.live_path = self.root / "live.json"
        cfg = render(site, node_id)
        mqtt = dict(cfg.get("mqtt", {}))
        mqtt.update({"host": broker[0], "port": broker[1], "server_hostname": server_hostname})
        cfg["mqtt"] = mqtt
        if hil and cfg["role"] in PLANT_ROLES:  # the twin drives it (a lone vnode obeys commands)
            cfg["params"] = dict(
                cfg.get("params") or {}, hil=plant_hil(cfg, _load_fs_kw(site, node_id))
            )
        self.config = cfg
        epoch = time.time() if epoch is None else epoch
        world = world_for(
            cfg,
            live_prefix="",
            seed=seed,
            clock={"mode": "real", "speed": speed, "rtc": None, "true": epoch, "true_real": epoch},
        )
        world["live"] = str(self.live_path.resolve())
        world.update(world_extra or {})
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.live_path.exists():
            self.live_path.write_text("{}")
        self.board = VirtualBoard(
            self.root, config=cfg, world=world, firmware=firmware_dir, heap=heap, name=node_id
        )
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


def _load_fs_kw(site, node_id: str) -> float:
    """A plant node's load input full scale: its twin component's capacity (or a server's load
    with room), 100 kW when the site gives neither."""
    for c in site.twin.components if getattr(site, "twin", None) else ():
        if c.get("id") == node_id:
            p = c.get("params") or {}
            if p.get("capacity_kw"):
                return float(p["capacity_kw"])
            if p.get("load_kw"):
                return 2.0 * float(p["load_kw"])
    return 100.0


class VirtualFleet:
    def __init__(
        self,
        site,
        pki,
        root: os.PathLike | str,
        *,
        broker: tuple[str, int],
        nodes: list[str] | None = None,
        speed: float = 1.0,
        heap: str = NODE_HEAP,
        seed: int | None = None,
    ):
        self.root = pathlib.Path(root)
        self.speed = speed
        self.epoch = time.time()  # the boards' clocks and the host's agree at this instant
        if seed is None and getattr(site, "twin", None) is not None:
            seed = site.twin.get("seed")  # readings look measured, the same way every run
        ids = nodes if nodes is not None else site.node_ids
        # every board folder is ours before the shared firmware is rebuilt under a running fleet
        held = []
        try:
            for n in ids:
                held.append(hold_folder(self.root / n, n))
            fw = self.root / "firmware"
            if fw.exists():
                shutil.rmtree(fw)
            compile_firmware(fw)
            self.nodes = {
                n: VirtualNode(
                    site,
                    pki,
                    n,
                    self.root / n,
                    broker=broker,
                    firmware_dir=fw,
                    speed=speed,
                    heap=heap,
                    epoch=self.epoch,
                    seed=seed,
                    hil=True,
                )
                for n in ids
            }
        finally:
            for key in held:  # the boards hold their folders from here on
                release_folder(key)

    def host_time(self, ts_ms: float) -> float:
        """The host's time.time() at which the boards' clocks read ts_ms (a reading's ts)."""
        return self.epoch + (ts_ms / 1000.0 - self.epoch) / self.speed

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
