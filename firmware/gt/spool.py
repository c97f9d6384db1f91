# The outbox's spill to flash: two append-only segment files, size-capped (see gt/outbox.py).
#
# A segment starts with b"GTO1" + u32 generation; a record is u16 length, u32 CRC-32, body, written
# with one write(), so a power cut mid-write tears only that record (gt/spoolload.py cuts it off
# at the next boot). When the writing segment is full and the other still holds readings, those
# (the oldest) are dropped and counted, and that segment is reused.
import os
import struct
from binascii import crc32
from micropython import const

MAGIC = b"GTO1"
SEG_HDR = const(8)  # magic + u32 generation
REC_HDR = const(6)


class Spill:
    """The size-capped file part of the outbox (two segment files on flash)."""

    FORMAT = (MAGIC, SEG_HDR, REC_HDR)  # for gt/spoolload.py, which does not import this module

    def __init__(self, path, cap_bytes, log=None):
        self.seg_cap = cap_bytes // 2
        self.names = (path + ".0", path + ".1")
        self.segs = []  # [slot, gen, size, count] oldest first; reading from [0], writing to [-1]
        self.roff = SEG_HDR  # read offset in segs[0]
        self.count = 0
        self.dropped = 0
        self.torn = 0
        self._head = None  # the next record, read from flash
        self._cur = None  # [i, generation, offset] of record i: where read(i) goes on reading
        for name in self.names:
            try:
                os.stat(name)
            except OSError:
                continue
            # segments on flash (a reset during an outage): checked, repaired, then dropped. An
            # outage that starts with none (every boot's first readings, every link loss) does
            # not load it: ~2 KB less beside the sampler at the busiest moment (issue #20)
            from gt import spoolload, unload

            spoolload.load(self, log)
            spoolload = None
            unload("spoolload")
            break

    def _remove(self, slot):
        try:
            os.remove(self.names[slot])
        except OSError:
            pass

    def append(self, rec):
        if self.seg_cap <= SEG_HDR:
            self.dropped += 1
            return
        need = REC_HDR + len(rec)
        segs = self.segs
        if not segs or segs[-1][2] + need > self.seg_cap:
            gen = segs[-1][1] + 1 if segs else 1
            if len(segs) == 2:
                # both segments in use: the oldest readings go, counted
                old = segs.pop(0)
                self.dropped += old[3]
                self.count -= old[3]
                self._head = self._cur = None
                self.roff = SEG_HDR
                slot = old[0]
            else:
                slot = 1 - segs[0][0] if segs else 0
            with open(self.names[slot], "wb") as f:
                f.write(MAGIC + struct.pack("<I", gen))
            segs.append([slot, gen, SEG_HDR, 0])
        seg = segs[-1]
        # one write: a power cut tears this record only
        with open(self.names[seg[0]], "ab") as f:
            f.write(struct.pack("<HI", len(rec), crc32(rec)) + rec)
        seg[2] += need
        seg[3] += 1
        self.count += 1

    def peek(self):
        if self._head is None and self.count:
            seg = self.segs[0]
            try:
                with open(self.names[seg[0]], "rb") as f:
                    f.seek(self.roff)
                    n = struct.unpack("<HI", f.read(REC_HDR))[0]
                    self._head = f.read(n)
            except (OSError, ValueError) as e:
                # flash failed under us: drop this segment rather than stall the outbox
                self._drop_seg(e)
                return self.peek()
        return self._head

    def read(self, i):
        """The i-th record waiting (0: the next, peek()), read ahead for the readings in flight:
        reading them in turn costs one read each (a cursor), any other i walks from the head."""
        if not i:
            return self.peek()
        if i >= self.count:
            return None
        c = self._cur
        segs = self.segs
        if c is None or c[0] != i or (c[1] != segs[0][1] and c[1] != segs[-1][1]):
            c = self._cur = [0, segs[0][1], self.roff]
        try:
            while True:
                for seg in self.segs:
                    if seg[1] == c[1]:
                        break
                else:
                    raise ValueError  # its segment went: walk again
                if c[2] >= seg[2]:  # at its end: on to the next segment
                    c[1] = self.segs[self.segs.index(seg) + 1][1]
                    c[2] = SEG_HDR
                    continue
                with open(self.names[seg[0]], "rb") as f:
                    f.seek(c[2])
                    while c[2] < seg[2]:
                        n = struct.unpack("<HI", f.read(REC_HDR))[0]
                        c[0] += 1
                        c[2] += REC_HDR + n
                        if c[0] > i:
                            return f.read(n)
                        f.seek(n, 1)
        except (OSError, ValueError, IndexError):
            self._cur = None
            return None

    def pop(self):
        if self.peek() is None:
            return
        seg = self.segs[0]
        self.roff += REC_HDR + len(self._head)
        self._head = None
        c = self._cur
        if c is not None:
            c[0] -= 1  # counted from the head, which moved on
            if c[0] < 1:
                self._cur = None
        seg[3] -= 1
        self.count -= 1
        if not seg[3]:
            self._remove(seg[0])
            self.segs.pop(0)
            self.roff = SEG_HDR

    def _drop_seg(self, why):
        seg = self.segs.pop(0)
        self.dropped += seg[3]
        self.count -= seg[3]
        self._remove(seg[0])
        self.roff = SEG_HDR
        self._head = self._cur = None
