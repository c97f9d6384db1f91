# Shim for `onewire` (the micropython-lib API) on a virtual board. The bus carries byte-level
# transactions to chip models from fakes/ (fakes/onewiredev.py), so a driver's ROM commands,
# function commands and CRC checks run exactly as on the wire.
import _world as W
from _world import clock as _clock

_SEARCH_ROM = const(0xF0)
_MATCH_ROM = const(0x55)
_SKIP_ROM = const(0xCC)
_READ_ROM = const(0x33)


class OneWireError(Exception):
    pass


class OneWire:
    SEARCH_ROM = 0xF0
    MATCH_ROM = 0x55
    SKIP_ROM = 0xCC

    def __init__(self, pin):
        pid = pin.id if hasattr(pin, "id") else pin
        self._devs = [W.device(s) for s in W.world.get("onewire", ()) if s.get("pin") == pid]
        self._sel = []
        self._phase = "idle"  # idle -> rom -> match -> func
        self._rom_buf = bytearray()

    def _present(self):
        return [d for d in self._devs if d.present()]

    def reset(self, required=False):
        _clock.tick()
        present = self._present()
        for d in present:
            d.on_reset()
        self._phase = "rom" if present else "idle"
        self._sel = []
        if required and not present:
            raise OneWireError()
        return bool(present)

    def writebyte(self, b):
        if self._phase == "rom":
            if b == _SKIP_ROM:
                self._sel = self._present()
                self._phase = "func"
            elif b == _MATCH_ROM:
                self._rom_buf = bytearray()
                self._phase = "match"
            elif b == _READ_ROM:
                self._sel = self._present()[:1]
                self._phase = "readrom"
            return
        if self._phase == "match":
            self._rom_buf.append(b)
            if len(self._rom_buf) == 8:
                self._sel = [d for d in self._present() if d.rom == bytes(self._rom_buf)]
                self._phase = "func"
            return
        for d in self._sel:
            if d.present():
                d.on_byte(b)

    def write(self, buf):
        for b in buf:
            self.writebyte(b)

    def readbyte(self):
        if self._phase == "readrom" and self._sel:
            return self._sel[0].next_rom_byte()
        live = [d for d in self._sel if d.present()]
        if not live:
            return 0xFF  # nobody pulls the line low: all ones
        v = 0xFF
        for d in live:
            v &= d.read_byte()  # open drain: a 0 from any device wins
        return v

    def readinto(self, buf):
        for i in range(len(buf)):
            buf[i] = self.readbyte()

    def readbit(self):
        return self.readbyte() & 1

    def writebit(self, value):
        pass

    def select_rom(self, rom):
        self.reset()
        self.writebyte(_MATCH_ROM)
        self.write(rom)

    def scan(self):
        # the outcome of the SEARCH ROM algorithm: every present device's ROM, in ROM order
        return sorted(bytearray(d.rom) for d in self._present())

    def crc8(self, data):
        return crc8(data)


def crc8(data):
    # Dallas/Maxim CRC-8 (x^8 + x^5 + x^4 + 1), as the chips compute it
    crc = 0
    for b in data:
        for _ in range(8):
            mix = (crc ^ b) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
            b >>= 1
    return crc
