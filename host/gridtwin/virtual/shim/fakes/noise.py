# Measurement noise of a chip model, seeded: the same sensor gives the same noise every run.
# A chip's world spec may carry "noise": {"<quantity>": rms, ..., "seed": n} (gridtwin.vworld.CHIPS
# holds the figures and their data sheets). Each draw is the sum of three uniform variates on
# [-rms, rms]: near-normal with that RMS, bounded at 3 x rms (gridtwin.vworld.NOISE_BOUND).


class Noise:
    def __init__(self, spec):
        n = spec.get("noise") or {}
        self.rms = n
        self.s = (n.get("seed", 1) & 0xFFFFFFFF) or 0x9E3779B9  # xorshift32 never leaves 0

    def _u(self):
        # xorshift32 (Marsaglia 2003): uniform on [-1, 1)
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x / 2147483648.0 - 1.0

    def add(self, key, value):
        r = self.rms.get(key)
        if not r:
            return value
        return value + r * (self._u() + self._u() + self._u())
