# DS18B20 temperature sensor on 1-Wire (Maxim DS18B20 data sheet). A conversion takes up to
# 750 ms at 12 bits, too long to wait for in every sample: each read() takes the result of the
# conversion started by the previous one and starts the next. After a start or a failure there is
# no conversion known to be running, so that read waits for one. Config rows: gt/drivers/options.py.
import time
from micropython import const

_CONVERT = const(0x44)
_READ = const(0xBE)
_WRITE = const(0x4E)
_SKIP_ROM = const(0xCC)
_POR = const(0x0550)  # +85 degC: the scratchpad's power-on value, before any conversion

METRICS = (("", "degC", -55, 125),)


class DS18B20:
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
        ow, sp = self.ow, self._sp
        try:
            if self._started is None:
                self._convert()
            left = self.conv_ms - time.ticks_diff(time.ticks_ms(), self._started)
            if left > 0:
                time.sleep_ms(left)
            self._select()
            ow.writebyte(_READ)
            ow.readinto(sp)
            self._convert()  # the next sample's conversion runs while the node does other work
            if sp == b"\xff\xff\xff\xff\xff\xff\xff\xff\xff":
                # others on the wire answered the reset, but nobody drives the bits: ours is gone
                raise OSError(19)
            if ow.crc8(sp):  # the CRC over all 9 bytes is 0 when they arrived intact
                raise ValueError("CRC error on the 1-Wire bus")
            if sp[4] & 0x9F != 0x1F:  # config's fixed bits; catches an all-zero (shorted) read too
                raise ValueError("scratchpad makes no sense (config byte %02x)" % sp[4])
            raw = (sp[1] << 8) | sp[0]
            if raw == _POR and (self._last is None or abs(self._last - 85) > 5):
                # 85 degC is a real temperature too, but out of the blue it is the power-on value
                # of a sensor that restarted and lost the conversion we asked for
                self._last = None
                raise ValueError("85 degC power-on value: the sensor restarted")
        except Exception:
            self._started = None  # whatever failed, no conversion is known to be running
            raise
        if raw & 0x8000:
            raw -= 0x10000
        # undefined low bits at 9..11-bit resolution are masked off
        self._last = t = (raw & ~((1 << (12 - self.bits)) - 1)) / 16
        return (t,)


def make(spec, hw):
    r = spec["rom"]
    return DS18B20(hw.onewire(), bytes.fromhex(r) if r else None, spec["bits"])
