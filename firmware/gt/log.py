# One log for the node: every line goes to the REPL; warnings and errors also go to a capped file
# on flash (log.txt, rotated to log.1.txt) that survives a reset, and to sinks that other parts add
# (the MQTT log topic, the OLED's last-error line).
import time
from micropython import const

_CAP = const(8192)
_LEVELS = "DIWE"


class Log:
    def __init__(self, path="log.txt", cap=_CAP, level="I"):
        self.path = path
        self.cap = cap
        self.min = _LEVELS.index(level)
        self.sinks = []
        self.last_error = None

    def _file(self, line):
        try:
            import os

            try:
                if os.stat(self.path)[6] > self.cap:
                    os.rename(self.path, self.path[:-3] + "1.txt")
            except OSError:
                pass
            with open(self.path, "a") as f:
                f.write(line)
                f.write("\n")
        except OSError:
            pass  # a full or failing flash must never take the node down with it

    def log(self, lvl, tag, msg, persist=False):
        n = _LEVELS.index(lvl)
        if n < self.min:
            return
        line = "%s %d %s: %s" % (lvl, time.ticks_ms(), tag, msg)
        print(line)
        if n >= 2 or persist:
            self._file(line)
        if n >= 3:
            self.last_error = msg
        for s in self.sinks:
            try:
                s(lvl, tag, msg)
            except Exception:
                pass

    def debug(self, tag, msg):
        self.log("D", tag, msg)

    def info(self, tag, msg, persist=False):
        self.log("I", tag, msg, persist)

    def warn(self, tag, msg):
        self.log("W", tag, msg)

    def error(self, tag, msg):
        self.log("E", tag, msg)

    def exc(self, tag, e):
        # Called when something died, often because RAM ran out: it never raises itself, so the
        # caller's crash count and reset still happen. Without room for the traceback the
        # exception alone is logged; without room even for that, it goes to the REPL in pieces.
        try:
            import sys
            import io

            buf = io.StringIO()
            sys.print_exception(e, buf)
            self.error(tag, buf.getvalue().replace("\n", " | ").strip(" |"))
        except MemoryError:
            try:
                self.error(tag, repr(e))
            except MemoryError:
                print("E", tag, e)


log = Log()
