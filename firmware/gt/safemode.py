# Safe mode: the node says once, clearly, why it will not start (REPL, log file, OLED), then waits
# blinking its LED slowly. It neither crashes nor boot-loops, and Ctrl-C gives the REPL to fix it.
import time


def run(reason, log, hw=None, display=None):
    log.error("safe", "SAFE MODE: " + reason)
    if display is not None:
        try:
            display.show(["SAFE MODE"] + _wrap(reason, 21))
        except Exception:
            pass
    on = False
    while True:
        on = not on
        if hw is not None:
            hw.blink(on)
        time.sleep_ms(100 if on else 1900)


def _wrap(text, width):
    out = []
    while text and len(out) < 6:
        out.append(text[:width])
        text = text[width:]
    return out
