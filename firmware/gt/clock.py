# Wall-clock time for readings. `ts` in telemetry is Unix time in ms; until the clock is known
# (NTP after the link comes up, or an RTC that kept time) readings carry only their ticks and get
# their ts once the offset is known, so every published ts is real.
import time
from micropython import const

# Ports differ in epoch (1970 or 2000); this makes unix_ms() right on either.
EPOCH_S = 0 if time.gmtime(0)[0] == 1970 else 946684800
_EPOCH_MS = EPOCH_S * 1000
_VALID_AFTER_MS = 1704067200000  # 2024-01-01: an RTC earlier than this was never set

_JITTER_MS = const(50)
offset = None  # unix_ms - ticks_ms, once known


def rtc_ms():
    return time.time_ns() // 1000000 + _EPOCH_MS


def check_rtc():
    """Use the RTC if it holds a plausible time (set before a soft reset, or by NTP)."""
    global offset
    now = rtc_ms()
    if now >= _VALID_AFTER_MS:
        new = now - time.ticks_ms()
        # A correction of a few ms is the two clocks' rounding, not news: keeping the offset keeps
        # the spacing of readings exact (the host sees seq n+1 exactly one interval after seq n).
        if offset is None or not -_JITTER_MS < new - offset < _JITTER_MS:
            offset = new
    return offset is not None


def unix_ms(ticks):
    """The Unix time (ms) of a ticks_ms() stamp, or None while the clock is not known."""
    if offset is None:
        return None
    return offset + ticks
