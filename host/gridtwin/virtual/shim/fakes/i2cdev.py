# Base of the register-level I2C chip models. A model answers register reads and writes as its
# datasheet says; the bus (machine.I2C in the shim) adds presence, NACKs and hangs from the world.
#
# A subclass implements read(ptr, n) -> bytes and write(ptr, data); `ptr` is the register pointer
# the master set (one byte, or two for chips with 16-bit register addresses). Values the chip
# measures come from the world spec through self.v(name, default).
import _world as W
from _world import clock as _clock


class I2CDevice:
    def __init__(self, spec):
        self.spec = spec
        self.addr = spec["addr"]
        self.ptr = 0
        self.reads = 0
        self.writes = 0

    # --- what the world does to the chip ---
    def present(self):
        return not W.in_windows(self.spec.get("unplugged"))

    def transaction(self):
        # called by the bus for every transfer: time on the wire, and a hung chip holds the bus
        busy = self.spec.get("busy_ms", 0)
        if busy:
            _clock.sleep_ms(busy)
        hang = self.spec.get("hang_from_ms")
        if hang is not None and _clock.world_ms() >= hang:
            while True:  # a stuck transaction: only the watchdog gets the board out
                _clock.sleep_ms(100)

    def v(self, name, default=0):
        return W.value(self.spec.get(name), default)

    # --- what the bus does ---
    def read_reg(self, ptr, n):
        self.ptr = ptr
        self.reads += 1
        return bytes(self.read(ptr, n))

    def write_reg(self, ptr, data):
        self.ptr = ptr
        self.writes += 1
        self.write(ptr, data)

    def read_current(self, n):
        self.reads += 1
        return bytes(self.read(self.ptr, n))

    def write_raw(self, data):
        # first byte(s) set the pointer; any more are data for that register
        w = self.spec.get("ptr_bytes", 1)
        if len(data) < w:
            return
        ptr = int.from_bytes(data[:w], "big")
        self.ptr = ptr
        if len(data) > w:
            self.write_reg(ptr, data[w:])

    # --- the chip (override) ---
    def read(self, ptr, n):
        return bytes(n)

    def write(self, ptr, data):
        pass


def be16(v):
    v = int(v) & 0xFFFF
    return bytes(((v >> 8) & 0xFF, v & 0xFF))


def s16(v):
    # clamp to a signed 16-bit register value
    v = int(v)
    return -32768 if v < -32768 else 32767 if v > 32767 else v
