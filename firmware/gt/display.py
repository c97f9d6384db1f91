# The display seam. open() returns an object with show(lines) (a message that stays: safe mode),
# banner(text, ms) (the `identify` command) and update(app) (the regular pages). Without an OLED,
# or when it fails, the NullDisplay keeps the last lines so they can be read back; a display error
# never stops the node.
_fb = None  # the OLED's frame buffer, taken at boot (reserve) while the heap is still whole


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


def open(cfg, hw, log):
    kind = cfg["display"]["kind"]
    if kind != "none":
        try:
            from gt import screens  # the OLED pages; absent on a build without a display

            return screens.open(cfg["display"], hw, _fb)
        except (ImportError, OSError) as e:
            log.warn("display", "no %s display: %s" % (kind, e))
    return NullDisplay()
