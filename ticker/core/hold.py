"""Entries held back because they came ahead of a missing seq. Pure: the caller passes time.

An order or end entry beyond the next seq its state expects (in a live run, the next seq
of the batch's own producer) is never applied ahead of the
missing ones (`ticker.core.aggregate.Ahead`). The consumer holds it here, unacknowledged
(so a crash loses nothing: it is read again from the pending list), and tries it again
after each round; the missing batches may still come (another consumer read them, or the
writer is behind). A held entry is given up (dead-lettered with its reason) once it has
waited `wait_s`, or at once when the hold is full (the highest seqs first: a stray far
ahead is the likeliest culprit, the lowest seqs the likeliest to fit soon).
"""

from dataclasses import dataclass, field

from ticker.core.batch import Entry

HOLD_SECONDS = 10.0
HOLD_MAX = 256  # entries; a batch is at most 65,536 orders (~1.3 MB), typically 4,000


def seq_key(entry: Entry) -> tuple[str, str, int]:
    """Entries in the order their senders numbered them: by run, then (a live run's
    batches) by producer, then by seq. Each producer's seqs are a sequence of their own."""
    return (entry.run, getattr(entry, "producer", ""), entry.seq)


@dataclass
class Held:
    """One entry waiting for the seqs before it."""

    entry_id: bytes
    fields: dict[bytes, bytes]
    entry: Entry
    since: float  # when it was first held (the caller's clock, seconds)


@dataclass
class Hold:
    """The entries held back, by stream entry id."""

    wait_s: float = HOLD_SECONDS
    cap: int = HOLD_MAX
    entries: dict[bytes, Held] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, entry_id: bytes) -> bool:
        return entry_id in self.entries

    def add(self, held: Held) -> bool:
        """Hold an entry; False if it was held already (read again from the pending list)."""
        if held.entry_id in self.entries:
            return False
        self.entries[held.entry_id] = held
        return True

    def in_seq_order(self) -> list[Held]:
        return sorted(self.entries.values(), key=lambda h: seq_key(h.entry))

    def release(self, entry_id: bytes) -> Held:
        """Stop holding an entry (it was applied or rejected)."""
        return self.entries.pop(entry_id)

    def give_up(self, now: float) -> list[Held]:
        """Remove and return the entries that waited too long, and those over the cap."""
        out = [h for h in self.entries.values() if now - h.since >= self.wait_s]
        for h in out:
            del self.entries[h.entry_id]
        if len(self.entries) > self.cap:
            over = sorted(self.entries.values(), key=lambda h: h.entry.seq)[self.cap :]
            for h in over:
                del self.entries[h.entry_id]
            out += over
        return out

    def next_deadline(self) -> float | None:
        """When the oldest held entry will be given up (None when nothing is held)."""
        if not self.entries:
            return None
        return min(h.since for h in self.entries.values()) + self.wait_s
