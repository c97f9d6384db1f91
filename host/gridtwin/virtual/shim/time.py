# Shim for MicroPython's `time` on a virtual board: the same API, driven by the world's clock so a
# test can run hours of board time in seconds (see _world.py). asyncio imports this module too.
from utime import gmtime, mktime, ticks_add, ticks_diff
import utime as _rt
from _world import clock as _clock

ticks_ms = _clock.ticks_ms
ticks_us = _clock.ticks_us


def ticks_cpu():
    return ticks_us()


def sleep_ms(ms):
    _clock.sleep_ms(ms)


def sleep_us(us):
    _clock.sleep_ms(us // 1000)


def sleep(s):
    _clock.sleep_ms(int(s * 1000))


def time():
    return int(_clock.wall())


def time_ns():
    return int(_clock.wall() * 1000000) * 1000


def localtime(secs=None):
    return _rt.localtime(time() if secs is None else secs)
