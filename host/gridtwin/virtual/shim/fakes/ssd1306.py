# SSD1306 OLED controller (Solomon Systech SSD1306 data sheet rev. 1.1) with its 128 x 64 bit
# GDDRAM: 8 pages of 128 column bytes, bit 0 the top row of the page. Each I2C transfer begins with
# a control byte: 0x00 (Co=0, D/C#=0) a stream of commands, 0x80 one command, 0x40 display data.
# Commands modelled (others are accepted with their argument bytes and ignored):
#   0xAE/0xAF display off/on, 0xA6/0xA7 normal/inverse, 0xA4/0xA5 RAM/all on, 0x81 n contrast,
#   0x20 n memory addressing mode (0 horizontal, 1 vertical, 2 page), 0x21 a b column range,
#   0x22 a b page range, 0xB0-0xB7 page (page mode), 0x00-0x0F / 0x10-0x1F column low/high
#   nibble (page mode), 0x40-0x7F display start line, 0xA0/0xA1 segment remap, 0xC0/0xC8 COM
#   scan direction, 0x8D n charge pump (the panel stays dark without it).
# The SH1106 (fakes/sh1106.py) has 132 columns of RAM and page addressing only; its panel shows
# columns 2..129.
#
# When the bottom-right visible byte has been written (a whole frame went out), the model prints
#   #world oled addr=<a> ms=<world ms> on=<0|1> inv=<0|1> remap=<0|1> comdec=<0|1> start=<line>
#   ram=<hex of the 8 x 128 visible bytes, page by page>
# which the tests render to PNG (tests/firmware/oled.py). World spec: {"model": "ssd1306",
# "addr": 60, "frames": true (print frames), "unplugged": [...]}.
import binascii
import _world as W
from fakes.powered import PoweredDevice

_ARGS = {
    0x81: 1,
    0x20: 1,
    0x21: 2,
    0x22: 2,
    0xA8: 1,
    0xD3: 1,
    0xD5: 1,
    0xD9: 1,
    0xDA: 1,
    0xDB: 1,
    0x8D: 1,
    0xAD: 1,
    0xA3: 2,
    0x26: 6,
    0x27: 6,
    0x29: 5,
    0x2A: 5,
}


class Device(PoweredDevice):
    RAM_COLS = 128
    VISIBLE0 = 0  # first RAM column on the panel
    SH1106 = False

    def power_on(self):
        self.ram = bytearray(self.RAM_COLS * 8)
        self.on = False
        self.inv = False
        self.remap = False
        self.comdec = False
        self.start = 0
        self.contrast = 0x7F
        self.pump = self.SH1106  # the SH1106's DC-DC is on by default
        self.mode = 2  # page addressing after reset
        self.c0, self.c1, self.p0, self.p1 = 0, 127, 0, 7
        self.col, self.page = 0, 0
        self._pending = None
        self._args = []
        self.frames = 0

    def write(self, ctrl, data):
        if ctrl & 0x40:
            self._data(data)
        else:
            for b in data:
                self._command(b)

    def _command(self, b):
        if self._pending is not None:
            self._args.append(b)
            if len(self._args) == _ARGS[self._pending]:
                self._apply(self._pending, self._args)
                self._pending = None
            return
        if b in _ARGS and not (self.SH1106 and b in (0x20, 0x21, 0x22, 0x8D)):
            self._pending = b
            self._args = []
        elif b in (0xAE, 0xAF):
            self.on = b == 0xAF
        elif b in (0xA6, 0xA7):
            self.inv = b == 0xA7
        elif b in (0xA0, 0xA1):
            self.remap = b == 0xA1
        elif b in (0xC0, 0xC8):
            self.comdec = b == 0xC8
        elif 0x40 <= b <= 0x7F:
            self.start = b - 0x40
        elif 0xB0 <= b <= 0xB7:
            self.page = b - 0xB0
        elif b <= 0x0F:
            self.col = (self.col & 0xF0) | b
        elif 0x10 <= b <= 0x1F:
            self.col = (self.col & 0x0F) | ((b & 0x0F) << 4)

    def _apply(self, c, a):
        if c == 0x81:
            self.contrast = a[0]
        elif c == 0x20:
            self.mode = a[0] & 3
        elif c == 0x21:
            self.c0, self.c1 = a[0] & 0x7F, a[1] & 0x7F
            self.col = self.c0
        elif c == 0x22:
            self.p0, self.p1 = a[0] & 7, a[1] & 7
            self.page = self.p0
        elif c == 0x8D:
            self.pump = bool(a[0] & 0x04)
        elif c == 0xAD:
            self.pump = bool(a[0] & 0x01)

    def _data(self, data):
        last = (7, self.VISIBLE0 + 127)
        complete = False
        for b in data:
            if self.col < self.RAM_COLS:
                self.ram[self.page * self.RAM_COLS + self.col] = b
            if (self.page, self.col) == last:
                complete = True
            if self.mode == 0:  # horizontal: across the column range, then the next page
                self.col += 1
                if self.col > self.c1:
                    self.col = self.c0
                    self.page = self.p0 if self.page >= self.p1 else self.page + 1
            elif self.mode == 1:  # vertical: down the page range, then the next column
                self.page += 1
                if self.page > self.p1:
                    self.page = self.p0
                    self.col = self.c0 if self.col >= self.c1 else self.col + 1
            else:  # page mode: along the page only
                self.col = (
                    min(self.col + 1, self.RAM_COLS - 1)
                    if self.col < self.RAM_COLS - 1
                    else self.col
                )
        if complete:
            self.frames += 1
            if self.spec.get("frames"):
                self.emit()

    def emit(self):
        # printed a page at a time: one 2 KB string could fail on a fragmented 96 KB heap
        print(
            "#world oled addr=%d ms=%d on=%d inv=%d remap=%d comdec=%d start=%d ram="
            % (
                self.addr,
                W.clock.world_ms(),
                1 if self.on and self.pump else 0,
                int(self.inv),
                int(self.remap),
                int(self.comdec),
                self.start,
            ),
            end="",
        )
        mv = memoryview(self.ram)
        for p in range(8):
            a = p * self.RAM_COLS + self.VISIBLE0
            print(binascii.hexlify(mv[a : a + 128]).decode(), end="")
        print()
