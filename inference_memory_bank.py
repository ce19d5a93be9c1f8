"""The quality-aware dynamic memory of one video (SPEC section 2).

Three kinds of entries, each a frame's key/value for the objects it holds:
  * permanent: the annotated frame(s); never evicted;
  * stored: propagated frames that passed the mem_freq and quality gates,
    at most `capacity` + 1 of them (eviction starts once the list holds more
    than `capacity`);
  * temporary: the previous frame when it was not stored, replaced every frame.
"""
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch


@dataclass
class MemoryEntry:
    frame: int
    key: torch.Tensor      # (K,128,1,h,w), one row per object in `objects`
    value: torch.Tensor    # (K,512,1,h,w)
    objects: Tuple[int, ...]
    quality: float = 1.0
    order: int = 0         # running count of stored frames when this one was stored


@dataclass
class Decision:
    """What the bank did with one frame (the memory log's record of it)."""
    stored: bool
    # offered frames: 'stored', 'replaced', 'not_due', 'low_quality'; permanent ones: 'first_frame', 'labelled'
    reason: str
    evicted_frame: Optional[int] = None
    quality: Optional[float] = None   # the relative quality the gate saw (None: permanent, not gated)


POLICIES = ('quality', 'recent')


class MemoryBank:
    """policy 'quality' is QDMN's; 'recent' stores every due frame with no quality gate and evicts
    the oldest stored one: the baseline of the paper's long-video comparison."""

    def __init__(self, mem_freq=5, quality_thr=0.8, capacity=20, policy='quality'):
        if policy not in POLICIES:
            raise ValueError(f'memory policy {policy!r}: expected one of {POLICIES}')
        self.mem_freq = mem_freq
        self.quality_thr = quality_thr
        self.capacity = capacity
        self.policy = policy
        self.permanent = []
        self.stored = []
        self.temporary = None
        self.last_stored_frame = None
        self.stored_count = 0

    @property
    def gate(self):
        """The relative quality a due frame must exceed to be stored; None when the policy has no gate."""
        return self.quality_thr if self.policy == 'quality' else None

    def add_permanent(self, frame, key, value, objects, reason='labelled'):
        """Keeps an annotated frame for good; `reason` ('first_frame' or 'labelled') only labels the Decision."""
        self.permanent.append(MemoryEntry(frame, key, value, tuple(objects)))
        self.last_stored_frame = frame
        self.temporary = None
        return Decision(True, reason)

    def start_pass(self):
        """A new propagation pass (YouTube-VOS, at each labelled frame): the frames stored so
        far become permanent; the stored list and its running count restart."""
        self.permanent += self.stored
        self.stored = []
        self.stored_count = 0

    def offer(self, frame, key, value, objects, quality):
        """Stores a propagated frame if it is due and good enough; else keeps it as temporary."""
        entry = MemoryEntry(frame, key, value, tuple(objects), float(quality))
        if self.last_stored_frame is not None and frame - self.last_stored_frame < self.mem_freq:
            self.temporary = entry
            return Decision(False, 'not_due', quality=entry.quality)
        if self.gate is not None and not entry.quality > self.gate:
            self.temporary = entry
            return Decision(False, 'low_quality', quality=entry.quality)
        self.stored_count += 1
        entry.order = self.stored_count
        self.last_stored_frame = frame
        self.temporary = None
        if len(self.stored) > self.capacity:
            victim = self.eviction_index(self.stored_count)
            evicted = self.stored[victim].frame
            del self.stored[victim]
            self.stored.append(entry)
            return Decision(True, 'replaced', evicted, entry.quality)
        self.stored.append(entry)
        return Decision(True, 'stored', quality=entry.quality)

    def eviction_index(self, count):
        """Index of the stored entry minimising exp(-|count - order|) + quality ('recent': the oldest).

        Recent entries get a bonus close to 1 and old ones almost none, so old
        low-quality frames go first.
        """
        if self.policy == 'recent':
            return 0  # stored entries are kept in the order they were stored
        costs = [math.exp(-abs(count - e.order)) + e.quality for e in self.stored]
        return min(range(len(costs)), key=costs.__getitem__)

    def entries(self):
        entries = self.permanent + self.stored
        return entries + [self.temporary] if self.temporary is not None else entries

    def frames(self):
        return [e.frame for e in self.entries()]

    def kept_frames(self):
        """Permanent and stored frames: what stays in memory beyond the next query (no temporary)."""
        return [e.frame for e in self.permanent + self.stored]

    def read_tensors(self, obj):
        """Key (1,128,T,h,w) and value (1,512,T,h,w) of every entry that holds object `obj`."""
        keys, values = [], []
        for e in self.entries():
            if obj in e.objects:
                row = e.objects.index(obj)
                keys.append(e.key[row:row + 1])
                values.append(e.value[row:row + 1])
        if not keys:
            raise KeyError(f'object {obj} has no memory')
        return torch.cat(keys, 2), torch.cat(values, 2)


def memory_summary(decisions, bank):
    """One line on a video's memory: decisions (counts per Decision reason) and the bank at the end."""
    stored = decisions['stored'] + decisions['replaced']
    return (f'memory: {stored} frames stored ({decisions["replaced"]} replacing older ones), '
            f'{decisions["low_quality"]} rejected by the quality gate, '
            f'{decisions["not_due"]} not due (--mem_freq {bank.mem_freq}); at the end {len(bank.entries())} entries '
            f'({len(bank.permanent)} permanent, {len(bank.stored)} stored, {int(bank.temporary is not None)} previous)')
