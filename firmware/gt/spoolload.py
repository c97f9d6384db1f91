# Boot-time check of the outbox spill (gt/spool.py): find the segments, order them by
# generation, count their records, and cut a segment back to its last good record when a power
# cut tore the one being written. Imported once by Spill() and dropped afterwards; the format
# comes with the spill (Spill.FORMAT), so the two do not import each other.
import os
import struct
from binascii import crc32

_HDR = 16  # the smallest body: a reading's packed header


def load(sp, log):
    magic, seg_hdr, rec_hdr = sp.FORMAT
    found = []
    for slot in (0, 1):
        try:
            with open(sp.names[slot], "rb") as f:
                h = f.read(seg_hdr)
                if len(h) < seg_hdr or h[:4] != magic:
                    raise ValueError
                gen = struct.unpack_from("<I", h, 4)[0]
                size, count, bad = _scan(f, seg_hdr, rec_hdr)
        except (OSError, ValueError):
            sp._remove(slot)
            continue
        if bad:
            # a power cut tore the last record: keep only the good ones before it
            sp.torn += 1
            _cut(sp, slot, size)
            if log:
                log.warn(
                    "outbox",
                    "%s: torn record after %d good ones; cut there" % (sp.names[slot], count),
                )
        if count:
            found.append([slot, gen, size, count])
        else:
            sp._remove(slot)
    found.sort(key=lambda s: s[1])
    sp.segs = found
    sp.count = sum(s[3] for s in found)
    if sp.count and log:
        log.info("outbox", "%d readings loaded from flash" % sp.count)


def _scan(f, seg_hdr, rec_hdr):
    # -> (size of the good part, records in it, whether bad bytes follow)
    size = seg_hdr
    count = 0
    while True:
        h = f.read(rec_hdr)
        if not h:
            return size, count, False
        if len(h) < rec_hdr:
            return size, count, True
        n, crc = struct.unpack("<HI", h)
        body = f.read(n)
        if len(body) < n or n < _HDR or crc32(body) != crc:
            return size, count, True
        size += rec_hdr + n
        count += 1


def _cut(sp, slot, size):
    name = sp.names[slot]
    tmp = name + ".tmp"
    buf = bytearray(256)
    with open(name, "rb") as src, open(tmp, "wb") as dst:
        left = size
        while left:
            n = src.readinto(buf)
            n = min(n, left)
            if not n:
                break
            dst.write(memoryview(buf)[:n])
            left -= n
    os.rename(tmp, name)
