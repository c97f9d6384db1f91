# A chip that loses its registers when it loses power: unplugging it for a while (the world's
# "unplugged" windows) and plugging it back brings it up in its power-on state, as on the bench.
# Models call power_on() from __init__ and override it to set their reset values.
import _world as W
from _world import clock as _clock
from fakes.i2cdev import I2CDevice


def lost_power(dev):
    """True when the chip was unplugged at any time since the bus last saw it (the bus only looks
    when it talks to the chip, so a short glitch between two transfers still counts)."""
    now = _clock.world_ms()
    last = dev._seen_ms
    dev._seen_ms = now
    for w in dev.spec.get("unplugged") or ():
        if last < w[1] <= now:  # a window ended since: the chip was off and came back
            return True
    return False


class PoweredDevice(I2CDevice):
    def __init__(self, spec):
        super().__init__(spec)
        self._powered = True
        self._seen_ms = _clock.world_ms()
        self.power_on()

    def present(self):
        cycled = lost_power(self)
        p = super().present()
        if p and (cycled or not self._powered):
            self.power_on()
        self._powered = p
        return p

    def power_on(self):
        pass


def u16(data):
    return (data[0] << 8) | data[1] if len(data) >= 2 else None
