# Shim for the ESP32's `machine` module on a virtual board. Peripherals read the world (_world.py):
# I2C devices are register-level chip models from fakes/, ADC and input pins follow schedules, the
# WDT resets the board when starved, reset() ends the process with RESET_EXIT for the runner.
import _world as W
from _world import clock as _clock

PWRON_RESET = W.PWRON_RESET
HARD_RESET = W.HARD_RESET
WDT_RESET = W.WDT_RESET
DEEPSLEEP_RESET = W.DEEPSLEEP_RESET
SOFT_RESET = W.SOFT_RESET

_ENODEV = const(19)
_ETIMEDOUT = const(116)

pins_out = {}  # pin id -> last value written (the test can't see it, the shim's LED log can)


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self.mode = mode
        if value is not None:
            self.value(value)

    def init(self, mode=-1, pull=-1, value=None):
        self.mode = mode
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            if self.mode == Pin.OUT:
                return pins_out.get(self.id, 0)
            return int(W.value(W.world.get("pins", {}).get(str(self.id)), 1))
        pins_out[self.id] = 1 if v else 0

    __call__ = value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=3):
        return None


class I2C:
    def __init__(self, id=0, *, scl=None, sda=None, freq=400000, timeout=50000):
        self.id = id
        self.freq = freq
        self._devs = {}
        for spec in W.world.get("i2c", ()):
            if spec.get("bus", 0) == id:
                self._devs[spec["addr"]] = W.device(spec)
        self._ptr_dev = None

    def _dev(self, addr):
        d = self._devs.get(addr)
        if d is None or not d.present():
            _clock.tick()
            raise OSError(_ENODEV)  # what the ESP32 raises on a NACK
        d.transaction()
        return d

    def scan(self):
        return sorted(a for a, d in self._devs.items() if d.present())

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        return self._dev(addr).read_reg(memaddr, nbytes)

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        data = self._dev(addr).read_reg(memaddr, len(buf))
        buf[:] = data

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        # a view, not a copy: the chip models only read it during the call, and copying a 1 KB
        # OLED frame would take a block of the firmware's heap that a real bus never needs
        self._dev(addr).write_reg(memaddr, memoryview(buf))

    def readfrom(self, addr, nbytes, stop=True):
        return self._dev(addr).read_current(nbytes)

    def readfrom_into(self, addr, buf, stop=True):
        buf[:] = self._dev(addr).read_current(len(buf))

    def writeto(self, addr, buf, stop=True):
        self._dev(addr).write_raw(bytes(buf))
        return len(buf)

    def writevto(self, addr, vector, stop=True):
        self._dev(addr).write_raw(b"".join(bytes(b) for b in vector))
        return len(vector)


class SoftI2C(I2C):
    def __init__(self, scl=None, sda=None, *, freq=400000, timeout=50000):
        super().__init__(
            -1 if scl is None else 100 + (scl.id if isinstance(scl, Pin) else scl),
            scl=scl,
            sda=sda,
            freq=freq,
        )
        # a SoftI2C bus is described in the world as bus "soft"
        for spec in W.world.get("i2c", ()):
            if spec.get("bus") == "soft":
                self._devs[spec["addr"]] = W.device(spec)


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_12BIT = 3

    def __init__(self, pin, *, atten=3):
        self.pin = pin.id if isinstance(pin, Pin) else pin
        self._atten = atten

    def atten(self, a):
        self._atten = a

    def width(self, w):
        pass

    def _volts(self):
        return float(W.value(W.world.get("adc", {}).get(str(self.pin)), 0.0))

    def read_uv(self):
        return int(self._volts() * 1000000)

    def read_u16(self):
        v = self._volts() / 3.3  # full scale at 11 dB attenuation
        return max(0, min(65535, int(v * 65535)))

    def read(self):
        return self.read_u16() >> 4


class WDT:
    _active = None

    def __init__(self, id=0, timeout=5000):
        # like the hardware: once started it cannot be stopped, only fed
        self.timeout = timeout
        self._fed = _clock.world_ms()
        if WDT._active is None:
            _clock.hooks.append(WDT._check)
        WDT._active = self

    def feed(self):
        self._fed = _clock.world_ms()

    @staticmethod
    def _check():
        w = WDT._active
        if w is not None and _clock.world_ms() - w._fed > w.timeout:
            WDT._active = None
            W.emit("wdt timeout=%d" % w.timeout)
            W.reset(WDT_RESET)


class RTC:
    def __init__(self, id=0):
        pass

    def datetime(self, dt=None):
        if dt is None:
            t = _clock.wall()
            y, mo, d, h, mi, s, wd, _ = W._rt.gmtime(int(t))
            return (y, mo, d, wd, h, mi, s, int((t % 1) * 1000000))
        y, mo, d, _wd, h, mi, s, us = dt
        _clock.set_rtc(W._rt.mktime((y, mo, d, h, mi, s, 0, 0)) + us / 1000000)

    def memory(self, data=None):
        if data is None:
            return bytes.fromhex(W.state.get("rtc_mem", ""))
        W.save_state(rtc_mem=bytes(data).hex())


def reset():
    W.reset(SOFT_RESET)  # on the ESP32 machine.reset() reports SOFT_RESET after the restart


def soft_reset():
    raise SystemExit(0)


def reset_cause():
    return W.reset_cause


def unique_id():
    return bytes.fromhex(W.world.get("board", {}).get("unique_id", "246f28a1b2c3"))


def freq(hz=None):
    if hz is None:
        return W.world.get("board", {}).get("freq", 240000000)


def idle():
    _clock.tick()


def lightsleep(ms=0):
    _clock.sleep_ms(ms)


def deepsleep(ms=0):
    _clock.sleep_ms(ms)
    W.reset(DEEPSLEEP_RESET)


def disable_irq():
    return 0


def enable_irq(state=0):
    pass
