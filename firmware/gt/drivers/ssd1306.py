# SSD1306 128x64 OLED controller on I2C (Solomon Systech SSD1306 data sheet), and the SH1106
# (Sino Wealth) that many "1.3 inch" modules carry instead. The picture is drawn with framebuf
# into one 1 KB buffer allocated here (MONO_VLSB: a byte is 8 pixels down one column, exactly the
# controller's page layout), then sent in one transfer.
#
# Every I2C transfer starts with a control byte: 0x00 a stream of commands, 0x40 a stream of
# display data. On the wire that is exactly a register write (address, one byte, data), so
# writeto_mem sends it, straight from our buffer.
import framebuf
from micropython import const

_W = const(128)
_H = const(64)

# Power-up sequence for the common 128x64 module (data sheet's application example): display
# off, clock, multiplex 64, offset 0, start line 0, charge pump on, horizontal addressing,
# segment remap and COM scan reversed (the glass is mounted rotated on these modules), COM pins
# alternate, contrast, precharge, VCOMH, resume from RAM, normal (not inverted), display on.
_INIT = bytes(
    (
        0xAE,
        0xD5,
        0x80,
        0xA8,
        0x3F,
        0xD3,
        0x00,
        0x40,
        0x8D,
        0x14,
        0x20,
        0x00,
        0xA1,
        0xC8,
        0xDA,
        0x12,
        0x81,
        0xCF,
        0xD9,
        0xF1,
        0xDB,
        0x40,
        0xA4,
        0xA6,
        0xAF,
    )
)
# The SH1106 has no charge pump command or horizontal mode; it uses its DC-DC (0xAD 0x8B).
_INIT_SH = bytes(
    (
        0xAE,
        0xD5,
        0x80,
        0xA8,
        0x3F,
        0xD3,
        0x00,
        0x40,
        0xAD,
        0x8B,
        0xA1,
        0xC8,
        0xDA,
        0x12,
        0x81,
        0xCF,
        0xD9,
        0x22,
        0xDB,
        0x35,
        0xA4,
        0xA6,
        0xAF,
    )
)
_WINDOW = bytes((0x21, 0, _W - 1, 0x22, 0, _H // 8 - 1))  # columns 0..127, pages 0..7
_CMD = const(0x00)
_DATA = const(0x40)


class SSD1306(framebuf.FrameBuffer):
    INIT = _INIT

    def __init__(self, i2c, addr=0x3C, buf=None):
        self.i2c = i2c
        self.addr = addr
        self.buf = buf or bytearray(_W * _H // 8)  # buf: 1 KB the caller set aside early
        self._c = bytearray(3)
        super().__init__(self.buf, _W, _H, framebuf.MONO_VLSB)
        self.init()  # probes the display too: no answer -> OSError

    def cmd(self, seq):
        self.i2c.writeto_mem(self.addr, _CMD, seq)

    def init(self):
        self.fill(0)
        self.cmd(self.INIT)
        self.show()

    def show(self):
        self.cmd(_WINDOW)
        self.i2c.writeto_mem(self.addr, _DATA, self.buf)


class SH1106(SSD1306):
    # 132 columns of RAM, the 128 visible ones start at column 2; page addressing only, so the
    # picture goes one page (8 rows) at a time, each preceded by its page and column address.
    INIT = _INIT_SH

    def show(self):
        c = self._c
        mv = memoryview(self.buf)
        for p in range(_H // 8):
            c[0] = 0xB0 | p
            c[1] = 0x02  # column 2: low nibble
            c[2] = 0x10  # high nibble 0
            self.cmd(c)
            self.i2c.writeto_mem(self.addr, _DATA, mv[p * _W : (p + 1) * _W])
