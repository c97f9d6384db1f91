# A chip that loses its registers when it loses power: unplugging it for a while (the world's
# "unplugged" windows) and plugging it back brings it up in its power-on state, as on the bench.
# Models call power_up() from __init__ and override power_on() to set their reset values; an I2C
# chip subclasses PoweredDevice, others (the DS18B20 on 1-Wire) call power_up() and powered().
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


def power_up(dev):
    # the model's first power-on: it starts from its reset values
    dev._powered = True
    dev._seen_ms = _clock.world_ms()
    dev.power_on()


def powered(dev, answers):
    """Whether the chip answers (`answers`: its bus's presence check), in its power-on state again
    when it was off since the bus last saw it."""
    cycled = lost_power(dev)
    p = answers()
    if p and (cycled or not dev._powered):
        dev.power_on()
    dev._powered = p
    return p


class PoweredDevice(I2CDevice):
    def __init__(self, spec):
        super().__init__(spec)
        power_up(self)

    def present(self):
        return powered(self, super().present)

    def power_on(self):
        pass


def u16(data):
    return (data[0] << 8) | data[1] if len(data) >= 2 else None
