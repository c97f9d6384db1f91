# DS18B20 temperature sensor on 1-Wire (Maxim DS18B20 data sheet). A conversion takes up to
# 750 ms at 12 bits, too long to wait for in every sample: each read() takes the result of the
# conversion started by the previous one and starts the next. After a start or a failure there is
# no conversion known to be running, so that read waits for one.
import time
from micropython import const

_CONVERT = const(0x44)
_READ = const(0xBE)
_WRITE = const(0x4E)
_SKIP_ROM = const(0xCC)
_POR = const(0x0550)  # +85 degC: the scratchpad's power-on value, before any conversion

METRICS = (("", "degC", -55, 125),)


class DS18B20:
    METRICS = METRICS

    def __init__(self, ow, rom=None, bits=12):
        self.ow = ow
        self.rom = rom
        self.bits = bits
        self.conv_ms = 750 >> (12 - bits)  # 93.75 / 187.5 / 375 / 750 ms
        self._sp = bytearray(9)
        self._started = None  # ticks of the conversion in flight, None when none is known
        self._last = None
        self._select()
        # TH, TL (alarm limits, unused) and the resolution in config bits 6..5
        ow.write(bytes((_WRITE, 0x7F, 0x80, ((bits - 9) << 5) | 0x1F)))

    def _select(self):
        if not self.ow.reset():
            raise OSError(19)  # no presence pulse: nobody on the wire answers
        if self.rom is None:
            self.ow.writebyte(_SKIP_ROM)
        else:
            self.ow.select_rom(self.rom)

    def _convert(self):
        self._select()
        self.ow.writebyte(_CONVERT)
        self._started = time.ticks_ms()

    def read(self):
        try:
            if self._started is None:
                self._convert()
            left = self.conv_ms - time.ticks_diff(time.ticks_ms(), self._started)
            if left > 0:
                time.sleep_ms(left)
            self._select()
            self.ow.writebyte(_READ)
            sp = self._sp
            self.ow.readinto(sp)
            self._convert()  # the next sample's conversion runs while the node does other work
        except Exception:
            self._started = None
            raise
        if sp == b"\xff\xff\xff\xff\xff\xff\xff\xff\xff":
            # others on the wire answered the reset, but nobody drives the bits: ours is gone
            self._started = None
            raise OSError(19)
        if self.ow.crc8(sp) != 0:  # CRC over all 9 bytes is 0 when they arrived intact
            self._started = None
            raise ValueError("CRC error on the 1-Wire bus")
        if sp[4] & 0x9F != 0x1F:  # config's fixed bits; catches an all-zero (shorted) read too
            self._started = None
            raise ValueError("scratchpad makes no sense (config byte %02x)" % sp[4])
        raw = (sp[1] << 8) | sp[0]
        if raw & 0x8000:
            raw -= 0x10000
        # undefined low bits at 9..11-bit resolution are masked off
        t = (raw & ~((1 << (12 - self.bits)) - 1)) / 16
        if raw == _POR and (self._last is None or abs(self._last - 85) > 5):
            # 85 degC is a real temperature too, but out of the blue it is the power-on value of
            # a sensor that restarted and lost the conversion we asked for
            self._started = None
            self._last = None
            raise ValueError("85 degC power-on value: the sensor restarted")
        self._last = t
        return (t,)


def options():
    from gt.config import between

    def rom(v):
        if v and (len(v) != 16 or v[:2] != "28"):
            return "must be the 16 hex digits of a DS18B20 ROM (family 28), got %r" % v

    return {"rom": (str, "", rom, "ROM code in hex; empty when it is alone on the wire"),
            "bits": (int, 12, between(9, 12), "resolution in bits (9: 94 ms .. 12: 750 ms)")}


def make(spec, hw):
    import binascii

    r = spec["rom"]
    return DS18B20(hw.onewire(), binascii.unhexlify(r) if r else None, spec["bits"])
