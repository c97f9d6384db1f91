# Base of the 1-Wire chip models: the bus (onewire.py in the shim) resets them, addresses them by
# ROM, hands them function-command bytes and reads bytes back.
import _world as W


class OneWireDevice:
    def __init__(self, spec):
        self.spec = spec
        self.rom = bytes.fromhex(spec["rom"])
        self._out = bytearray()
        self._rom_i = 0

    def present(self):
        return not W.in_windows(self.spec.get("unplugged"))

    def v(self, name, default=0):
        return W.value(self.spec.get(name), default)

    def on_reset(self):
        self._out = bytearray()
        self._rom_i = 0

    def next_rom_byte(self):
        b = self.rom[self._rom_i % 8]
        self._rom_i += 1
        return b

    def on_byte(self, b):
        pass

    def read_byte(self):
        if self._out:
            b = self._out[0]
            self._out = self._out[1:]
            return b
        return 0xFF

    def reply(self, data):
        self._out.extend(data)
