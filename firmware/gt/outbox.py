# The outbox: every reading goes here first, and the publisher takes it from here. It is a ring of
# fixed size allocated once; when full, the oldest reading is dropped and counted, so the node
# never runs out of memory while the link is down. (Store-and-forward to flash extends this.)
class Outbox:
    def __init__(self, capacity):
        self.cap = capacity
        self._ring = [None] * capacity
        self._head = 0  # oldest
        self._n = 0
        self.dropped = 0
        self.pushed = 0

    def __len__(self):
        return self._n

    def push(self, rec):
        if self._n == self.cap:
            self._head = (self._head + 1) % self.cap
            self._n -= 1
            self.dropped += 1
        self._ring[(self._head + self._n) % self.cap] = rec
        self._n += 1
        self.pushed += 1

    def peek(self):
        return self._ring[self._head] if self._n else None

    def pop(self):
        if not self._n:
            return None
        rec = self._ring[self._head]
        self._ring[self._head] = None
        self._head = (self._head + 1) % self.cap
        self._n -= 1
        return rec
