# DS18B20 1-Wire thermometer (Maxim DS18B20 data sheet, 19-7487). Function commands after the ROM
# phase: 0x44 CONVERT T (read slots return 0 while converting, 1 when done), 0xBE READ SCRATCHPAD
# (9 bytes: temp LSB/MSB, TH, TL, config, 0xFF, 0x0C, 0x10, CRC), 0x4E WRITE SCRATCHPAD (TH, TL,
# config), 0xB4 READ POWER SUPPLY. Conversion time: 93.75/187.5/375/750 ms at 9/10/11/12 bits.
# At power-on the temperature register reads +85 degC (0x0550). Temperature is 12-bit two's
# complement in 1/16 degC; at lower resolutions the low bits are undefined (here: 0).
# World spec: {"model": "ds18b20", "pin": 4, "rom": "28ff...", "temp_c": 21.5,
#              "noisy": [[from_ms, to_ms]] (a bit flips on the wire: the CRC fails),
#              "unplugged": [[from_ms, to_ms]]}
import _world as W
from _world import clock as _clock
from fakes.noise import Noise
from fakes.onewiredev import OneWireDevice
from fakes.powered import power_up, powered
from onewire import crc8


class Device(OneWireDevice):
    def __init__(self, spec):
        super().__init__(spec)
        self.noise = Noise(spec)  # "noise": {"temp_c": rms, "seed": n}
        power_up(self)

    def power_on(self):
        self.temp = 0x0550
        self.th, self.tl, self.conf = 0x4B, 0x46, 0x7F  # EEPROM defaults: 12 bits
        self.done_at = None
        self._cmd = None
        self._args = bytearray()

    def present(self):
        return powered(self, super().present)

    def conv_ms(self):
        return 750 >> (3 - ((self.conf >> 5) & 3))

    def _latch(self):
        # a conversion that has finished by now puts the world's temperature at its end time
        if self.done_at is not None and _clock.world_ms() >= self.done_at:
            t = self.noise.add("temp_c", W.value(self.spec.get("temp_c"), 25.0, self.done_at))
            bits = 9 + ((self.conf >> 5) & 3)
            raw = int(round(t * 16)) & ~((1 << (12 - bits)) - 1)
            self.temp = max(-55 * 16, min(125 * 16, raw)) & 0xFFFF
            self.done_at = None

    def on_reset(self):
        super().on_reset()
        self._latch()
        self._cmd = None

    def on_byte(self, b):
        if self._cmd == 0x4E:
            self._args.append(b)
            if len(self._args) == 3:
                self.th, self.tl, self.conf = (
                    self._args[0],
                    self._args[1],
                    (self._args[2] & 0x60) | 0x1F,
                )
                self._cmd = None
            return
        if b == 0x44:
            self.done_at = _clock.world_ms() + self.conv_ms()
        elif b == 0xBE:
            self._latch()
            sp = bytes(
                (self.temp & 0xFF, self.temp >> 8, self.th, self.tl, self.conf, 0xFF, 0x0C, 0x10)
            )
            sp = bytearray(sp + bytes((crc8(sp),)))
            if W.in_windows(self.spec.get("noisy")):
                sp[1] ^= 0x04  # one bit lost to noise on a long cable
            self.reply(sp)
        elif b == 0x4E:
            self._cmd = 0x4E
            self._args = bytearray()

    def read_byte(self):
        if self._out:
            return super().read_byte()
        if self.done_at is not None:
            return 0 if _clock.world_ms() < self.done_at else 0xFF
        return 0xFF
