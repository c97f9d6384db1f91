# Shim for `select`: asyncio waits here, so this is where the virtual clock is told to move.
# Real sockets still work: while one is registered, waits are real (scaled by the clock's speed).
from uselect import POLLIN, POLLOUT, POLLERR, POLLHUP
import uselect as _rs
import utime as _rt
from _world import clock as _clock


class _Poll:
    def __init__(self):
        self._p = _rs.poll()
        self._objs = {}

    def register(self, obj, mask=POLLIN | POLLOUT):
        if id(obj) not in self._objs:
            _clock.io_objects += 1
        self._objs[id(obj)] = obj
        self._p.register(obj, mask)

    def unregister(self, obj):
        if self._objs.pop(id(obj), None) is not None:
            _clock.io_objects -= 1
        self._p.unregister(obj)

    def modify(self, obj, mask):
        self._p.modify(obj, mask)

    def _wait(self, fn, timeout, *flags):
        for h in _clock.pre_wait:
            h()
        if timeout:
            _clock.idle()
        if _clock.warp:
            if not _clock.io_objects:
                # nothing can wake the board but a timer: jump to it
                _clock.advance_us(timeout * 1000 if timeout > 0 else 0)
                return ()
            t0 = _rt.time_ns()
            r = fn(timeout, *flags)
            _clock.advance_us((_rt.time_ns() - t0) // 1000)
            return r
        r = fn(_clock.real_ms(timeout), *flags)
        _clock.tick()
        return r

    def poll(self, timeout=-1):
        return self._wait(self._p.poll, timeout)

    def ipoll(self, timeout=-1, flags=0):
        return self._wait(self._p.ipoll, timeout, flags)


def poll():
    return _Poll()
