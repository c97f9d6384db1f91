# The display seam. open() returns an object with show(lines) (a message that stays: safe mode),
# banner(text, ms) (the `identify` command) and update(app) (the regular pages). Without an OLED,
# or when it fails, the NullDisplay keeps the last lines so they can be read back; a display error
# never stops the node. pause() takes the pages out of RAM while the node connects.
_fb = None  # the OLED's frame buffer, taken at boot (reserve) while the heap is still whole
_held = False  # an update over the air runs: the pages stay out of RAM until it ends (hold)


def reserve(cfg):
    # The one 1 KB block the node needs: taken before anything fragments the heap, so a node that
    # has the RAM in total never fails to find it in one piece.
    global _fb
    if cfg["display"]["kind"] != "none":
        _fb = bytearray(1024)


class NullDisplay:
    lines = ()

    def show(self, lines):
        self.lines = tuple(lines)

    def update(self, app):
        pass

    def banner(self, text, ms=5000):
        self.lines = (text,)


class _Paused(NullDisplay):
    # The display while the node connects (pause()): the OLED keeps its last frame, and its pages
    # (gt/screens.py and the driver, ~8 KB on the unix port) are out of RAM for the TLS handshake,
    # the node's tightest moment (issue #20: EL1 and pv1 ran out of RAM there at 96 KB). The first
    # update once the attempt is over (the app's link no longer "connecting") loads them again.
    def update(self, app):
        if app.link != "connecting" and not _held:
            try:
                app.display = open(app.cfg, app.hw, app.log)
            except MemoryError:
                pass  # the next update tries again


def pause(app):
    """A connection attempt begins: the OLED's pages leave RAM until it is over (see _Paused)."""
    if not isinstance(app.display, NullDisplay):  # (none, broken, or paused already: nothing)
        from gt import unload

        app.display = _Paused()
        unload("screens")
        unload("drivers.ssd1306")


def hold(app, on):
    """An update over the air begins (on) or ends: its receiver gets the pages' RAM while it runs
    (gt/ota.py; ~8 KB, which EL1 at 96 KB did not have beside the receiver, docs/ota.md)."""
    global _held
    _held = on
    if on:
        pause(app)


def open(cfg, hw, log):
    kind = cfg["display"]["kind"]
    if kind != "none":
        try:
            from gt import screens  # the OLED pages; absent on a build without a display

            return screens.open(cfg["display"], hw, _fb)
        except (ImportError, OSError) as e:
            log.warn("display", "no %s display: %s" % (kind, e))
    return NullDisplay()
