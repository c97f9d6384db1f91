# Shim for `ntptime`: answers with the world's true time while the link is up.
import _world as W

host = "pool.ntp.org"
timeout = 1


def time():
    if not W.link_up():
        raise OSError(116)  # ETIMEDOUT, as when the server cannot be reached
    return int(W.clock.true_wall())


def settime():
    W.clock.set_rtc(W.clock.true_wall() if W.link_up() else time())
