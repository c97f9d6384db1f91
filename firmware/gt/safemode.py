# Safe mode: the node says once, clearly, why it will not start (REPL, log file, OLED), then waits
# blinking its LED slowly. It neither crashes nor boot-loops, and Ctrl-C gives the REPL to fix it.
# `lines` is the reason as the OLED shows it (16 characters a line), when the caller has it shorter.
import time


def run(reason, log, hw=None, display=None, lines=None):
    log.error("safe", "SAFE MODE: " + reason)
    if display is not None:
        try:
            display.show(["SAFE MODE"] + (lines or [reason]))
        except Exception:
            pass  # the reason is in the log already; a broken OLED changes nothing
    on = False
    while True:
        on = not on
        if hw is not None:
            hw.blink(on)
        time.sleep_ms(100 if on else 1900)
