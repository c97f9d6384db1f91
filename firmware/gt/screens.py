# The OLED pages (128x64, 16 characters x 8 lines of framebuf's 8x8 font), for the engineer
# standing next to the node:
#   overview   node id, role, link and TLS state, outbox depth and drops, age of the last
#              publish, uptime, the role's state, fault count
#   readings   every metric with its unit (as many pages as needed); a bad sensor shows "bad"
#   faults     each bad sensor and why, else the last error logged
# Pages rotate every page_ms. banner(text, ms) (the `identify` command) takes the screen for a
# while; show(lines) (safe mode) keeps it. Every minute the content moves by one pixel around a
# small square, so no pixel stays lit for years (OLEDs burn in). A display that stops answering
# is retried every 30 s; its errors never reach the node.
import time
from gt.drivers.ssd1306 import SH1106, SSD1306

_SHIFTS = ((0, 0), (1, 0), (1, 1), (0, 1))
_SHIFT_MS = 60000
_RETRY_MS = 30000


def open(dcfg, hw):
    cls = SH1106 if dcfg["kind"] == "sh1106" else SSD1306
    return Screens(cls(hw.i2c(0), dcfg["addr"]), dcfg["page_ms"])


def _fmt(v):
    # fits a value in few characters at a sensible precision
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    a = abs(v)
    return "%d" % round(v) if a >= 10000 else "%.1f" % v if a >= 100 else "%.2f" % v if a >= 10 else "%.3f" % v


def _wrap(text, width=16, rows=7):
    out = []
    while text and len(out) < rows:
        out.append(text[:width])
        text = text[width:]
    return out


def _age(ms):
    s = ms // 1000
    return "%ds" % s if s < 120 else "%dm" % (s // 60) if s < 7200 else "%dh" % (s // 3600)


class Screens:
    present = True

    def __init__(self, drv, page_ms):
        self.drv = drv
        self.page_ms = page_ms
        self.t0 = time.ticks_ms()
        self._msg = None
        self._banner = None
        self._until = 0
        self._drawn = None
        self._retry_at = None

    # --- what the app and the commands call ---
    def show(self, lines):
        rows = []
        for ln in lines:
            rows += _wrap(ln, 16, 8 - len(rows)) or [""]
        self._msg = rows
        self._draw(rows[:8])

    def banner(self, text, ms=5000):
        self._banner = text
        self._until = time.ticks_add(time.ticks_ms(), ms)
        self._draw_banner()

    def update(self, app):
        now = time.ticks_ms()
        if self._retry_at is not None:
            if time.ticks_diff(now, self._retry_at) < 0:
                return
            try:
                self.drv.init()
                self._retry_at = None
                self._drawn = None
            except OSError:
                self._retry_at = time.ticks_add(now, _RETRY_MS)
                return
        try:
            self._update(app, now)
        except OSError as e:
            app.log.warn("display", "OLED stopped answering (%r); retrying every 30 s" % e)
            self._retry_at = time.ticks_add(now, _RETRY_MS)

    # --- pages ---
    def _update(self, app, now):
        if self._msg is not None:
            return
        if self._banner is not None:
            if time.ticks_diff(now, self._until) < 0:
                return self._draw_banner()
            self._banner = None
        up = time.ticks_diff(now, self.t0)
        readings = self._readings(app)
        n = 2 + len(readings)
        i = (up // self.page_ms) % n
        if i == 0:
            rows = self._overview(app, now)
        elif i <= len(readings):
            rows = readings[i - 1]
        else:
            rows = self._faults(app)
        head = rows[0]
        tag = "%d/%d" % (i + 1, n)
        rows[0] = head[:15 - len(tag)] + " " * (16 - len(tag) - len(head[:15 - len(tag)])) + tag
        self._draw(rows, shift=_SHIFTS[(up // _SHIFT_MS) % 4])

    def _overview(self, app, now):
        cfg = app.cfg
        tls = getattr(app, "tls", None)
        last = app.publisher.last_ok
        pub = "never" if last is None else _age(time.ticks_diff(now, last)) + " ago"
        up = time.ticks_diff(now, app.started) // 1000
        nf = len(app.faults())
        return [cfg["node"], cfg["role"][:16],
                "link %s%s" % (app.link, "" if tls is None else " tls " + ("on" if tls else "off")),
                "queue %d drop %d" % (len(app.outbox), app.outbox.dropped),
                "pub " + pub,
                "up %d:%02d:%02d" % (up // 3600, up // 60 % 60, up % 60),
                app.role.state()[:16],
                "faults %d" % nf if nf else "no faults"]

    def _readings(self, app):
        last = getattr(app.sampler, "last", None)
        m = last[2] if last else {}
        items = []
        for s in app.sensors:
            for i, n in enumerate(s.names):
                items.append((n, s.drv.METRICS[i][1], m.get(n)))
        for n, u in sorted(app.role.units().items()):
            items.append((n, u, m.get(n)))
        pages = []
        for k in range(0, len(items), 7):
            rows = ["readings"]
            for n, u, v in items[k:k + 7]:
                val = "bad" if v is None else _fmt(v) + u
                rows.append(n[:15 - len(val)] + " " * max(1, 16 - len(n[:15 - len(val)]) - len(val)) + val)
            pages.append(rows)
        return pages

    def _faults(self, app):
        f = app.faults()
        rows = ["faults"]
        if not f:
            rows.append("no faults")
            err = app.log.last_error
            if err:
                rows.append("last error:")
                rows += _wrap(err, 16, 5)
            return rows
        for sid, why in f:
            rows += _wrap("%s: %s" % (sid, why), 16, 8 - len(rows))
            if len(rows) >= 8:
                break
        return rows

    # --- drawing ---
    def _draw(self, rows, shift=(0, 0), invert_head=True):
        key = (tuple(rows), shift)
        if key == self._drawn:
            return  # nothing changed: spare the bus
        d = self.drv
        dx, dy = shift
        d.fill(0)
        for r, text in enumerate(rows[:8]):
            if r == 0 and invert_head:
                d.fill_rect(0, dy, 128, 8, 1)
                d.text(text, dx, dy, 0)
            else:
                d.text(text, dx, r * 8 + dy, 1)
        d.show()
        self._drawn = key

    def _draw_banner(self):
        key = ("banner", self._banner)
        if key == self._drawn:
            return
        d = self.drv
        d.fill(1)
        d.rect(2, 2, 124, 60, 0)
        lines = _wrap(self._banner, 14, 4)
        y = 32 - len(lines) * 6
        for k, t in enumerate(lines):
            d.text(t, 64 - len(t) * 4, y + k * 12, 0)
        d.show()
        self._drawn = key
