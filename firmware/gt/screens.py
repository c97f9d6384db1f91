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
from micropython import const
from gt.drivers.ssd1306 import SH1106, SSD1306

_SHIFT_MS = const(60000)
_RETRY_MS = const(30000)
_PER_PAGE = const(7)  # readings under the page's header line


def open(dcfg, hw, buf=None):
    cls = SH1106 if dcfg["kind"] == "sh1106" else SSD1306
    return Screens(cls(hw.i2c(0), dcfg["addr"], buf), dcfg["page_ms"])


def _fmt(v):
    # fits a value in few characters at a sensible precision
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    a = abs(v)
    return (
        "%d" % round(v)
        if a >= 10000
        else "%.1f" % v
        if a >= 100
        else "%.2f" % v
        if a >= 10
        else "%.3f" % v
    )


def _wrap(text, width, rows):
    out = []
    while text and len(out) < rows:
        out.append(text[:width])
        text = text[width:]
    return out


def _lr(left, right):
    # one 16-character line: left text cut to fit, right text flush right, at least one space
    left = left[: max(0, 15 - len(right))]
    return left + " " * max(1, 16 - len(left) - len(right)) + right


class Screens:
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
        self._draw(rows)

    def banner(self, text, ms=5000):
        self._banner = _wrap(text, 14, 4)
        self._until = time.ticks_add(time.ticks_ms(), ms)
        self._draw(self._banner, banner=True)

    def update(self, app):
        now = time.ticks_ms()
        try:
            if self._retry_at is not None:
                if time.ticks_diff(now, self._retry_at) < 0:
                    return
                self._drawn = None
                self.drv.init()
                self._retry_at = None
            self._update(app, now)
        except OSError as e:
            if self._retry_at is None:
                app.log.warn("display", "OLED stopped answering (%r); retrying every 30 s" % e)
            self._retry_at = time.ticks_add(now, _RETRY_MS)

    # --- pages ---
    def _update(self, app, now):
        if self._msg is not None:
            return self._draw(self._msg)
        if self._banner is not None:
            if time.ticks_diff(now, self._until) < 0:
                return self._draw(self._banner, banner=True)
            self._banner = None
        up = time.ticks_diff(now, self.t0)
        m = app.sampler.last
        m = m[2] if m else {}
        items = []  # (metric, unit): the sensors' in config order, then the role's
        for s in app.sensors:
            items += zip(s.names, (x[1] for x in s.metrics))
        items += sorted(app.role.units().items())
        pages = (len(items) + _PER_PAGE - 1) // _PER_PAGE
        n = 2 + pages
        i = (up // self.page_ms) % n
        if i == 0:
            rows = self._overview(app, now)
        elif i <= pages:
            rows = ["readings"]
            for name, unit in items[(i - 1) * _PER_PAGE : i * _PER_PAGE]:
                v = m.get(name)
                rows.append(_lr(name, "bad" if v is None else _fmt(v) + unit))
        else:
            rows = ["faults"]
            f = app.faults()
            for sid, why in f:
                rows += _wrap("%s: %s" % (sid, why), 16, 8 - len(rows))
            if not f:
                rows.append("no faults")
                err = app.log.last_error
                if err:
                    rows.append("last error:")
                    rows += _wrap(err, 16, 5)
        rows[0] = _lr(rows[0], "%d/%d" % (i + 1, n))
        # burn-in: one pixel a minute around a square, (0,0) (1,0) (1,1) (0,1)
        k = (up // _SHIFT_MS) % 4
        self._draw(rows, ((k + 1) >> 1) & 1, k >> 1)

    def _overview(self, app, now):
        cfg = app.cfg
        tls = getattr(app, "tls", None)
        last = app.publisher.last_ok
        if last is None:
            pub = "never"
        else:
            s = time.ticks_diff(now, last) // 1000
            pub = (
                "%ds" % s if s < 120 else "%dm" % (s // 60) if s < 7200 else "%dh" % (s // 3600)
            ) + " ago"
        up = app.uptime()
        nf = len(app.faults())
        return [
            cfg["node"],
            cfg["role"][:16],
            "link %s%s" % (app.link, "" if tls is None else " tls " + ("on" if tls else "off")),
            "queue %d drop %d" % (len(app.outbox), app.outbox.dropped),
            "pub " + pub,
            "up %d:%02d:%02d" % (up // 3600, up // 60 % 60, up % 60),
            app.role.state()[:16],
            "faults %d" % nf if nf else "no faults",
        ]

    # --- drawing ---
    def _draw(self, rows, dx=0, dy=0, banner=False):
        key = (tuple(rows), dx, dy, banner)
        if key == self._drawn:
            return  # nothing changed: spare the bus
        d = self.drv
        if banner:  # dark text in a frame on a lit screen, centred
            d.fill(1)
            d.rect(2, 2, 124, 60, 0)
            y = 32 - len(rows) * 6
            for k, t in enumerate(rows):
                d.text(t, 64 - len(t) * 4, y + k * 12, 0)
        else:  # the first row in an inverted header bar
            d.fill(0)
            d.fill_rect(0, dy, 128, 8, 1)
            for r, t in enumerate(rows[:8]):
                d.text(t, dx, r * 8 + dy, 0 if r == 0 else 1)
        d.show()
        self._drawn = key
