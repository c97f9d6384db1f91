"""Render the OLED frames the fake SSD1306/SH1106 prints (``#world oled ...``) to PNG, as the
panel shows them, and compare them with the golden images in tests/firmware/golden/.

Set GT_UPDATE_GOLDEN=1 to (re)write the golden images from the current firmware; look at them
(README shows them) before committing."""

from __future__ import annotations

import os
import pathlib
import re

from PIL import Image

GOLDEN = pathlib.Path(__file__).parent / "golden"
SCALE = 3
LIT = (150, 215, 255)
DARK = (8, 10, 14)
_RX = re.compile(
    r"#world oled addr=(\d+) ms=(\d+) on=(\d) inv=(\d) remap=(\d) comdec=(\d) start=(\d+) "
    r"ram=([0-9a-f]+)"
)


def frames(board) -> list[dict]:
    out = []
    for m in board.grep(_RX.pattern):
        out.append(
            {
                "addr": int(m[1]),
                "ms": int(m[2]),
                "on": m[3] == "1",
                "inv": m[4] == "1",
                "remap": m[5] == "1",
                "comdec": m[6] == "1",
                "start": int(m[7]),
                "ram": bytes.fromhex(m[8]),
            }
        )
    return out


def last_before(fs: list[dict], ms: int) -> dict:
    return [f for f in fs if f["ms"] < ms][-1]


def pixels(f: dict) -> list[list[int]]:
    """The panel's 64 rows of 128 pixels. The modules mount the glass rotated, so the standard
    init (segment remap 0xA1, COM scan reversed 0xC8) shows RAM upright."""
    rows = []
    for y in range(64):
        r = ((y if f["comdec"] else 63 - y) + f["start"]) % 64
        row = []
        for x in range(128):
            c = x if f["remap"] else 127 - x
            bit = (f["ram"][(r // 8) * 128 + c] >> (r % 8)) & 1
            row.append((bit ^ f["inv"]) if f["on"] else 0)
        rows.append(row)
    return rows


def image(f: dict) -> Image.Image:
    px = pixels(f)
    img = Image.new("RGB", (128 * SCALE + 2 * SCALE, 64 * SCALE + 2 * SCALE), DARK)
    for y, row in enumerate(px):
        for x, v in enumerate(row):
            if v:
                for dy in range(SCALE - 1):  # a dark gap between pixels, as on the glass
                    for dx in range(SCALE - 1):
                        img.putpixel(((x + 1) * SCALE + dx, (y + 1) * SCALE + dy), LIT)
    return img


def matches_golden(f: dict, name: str, tmp_path: pathlib.Path) -> None:
    img = image(f)
    path = GOLDEN / f"{name}.png"
    if os.environ.get("GT_UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        img.save(path, optimize=True)
    assert path.exists(), f"no golden image {path}; run with GT_UPDATE_GOLDEN=1 to make it"
    got = tmp_path / f"{name}.png"
    img.save(got)
    want = Image.open(path).convert("RGB")
    assert want.tobytes() == img.tobytes(), (
        f"OLED page '{name}' differs from {path}; see {got} (GT_UPDATE_GOLDEN=1 rewrites it)"
    )


def text_rows(f: dict) -> int:
    return sum(1 for row in pixels(f) if any(row))
