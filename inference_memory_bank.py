"""The quality-aware dynamic memory of one video (the QDMN paper; README "Long videos"), and the
published memory settings of DAVIS and YouTube-VOS (the presets every layer above uses).

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


@dataclass(frozen=True)
class Preset:
    """The published engine settings of one benchmark, and the protocol they go with.

    protocol 'davis': one labelled first frame is the quality reference, a frame's quality is the
    plain mean of its object scores; 'youtube': objects enter on any labelled frame, each starting
    a propagation pass whose first propagated frame is the reference, zero scores left out.
    """
    name: str
    protocol: str
    mem_freq: int        # minimum frame gap between stored memory frames
    quality_thr: float   # relative quality a due frame must exceed to be stored
    memory_thr: int      # capacity of the propagated memory (of each pass on YouTube-VOS)
    top_k: int = 50      # memory pixels read per query pixel


# YouTube-VOS videos are shorter, sparser and show more objects: a smaller memory and a laxer gate
# than DAVIS's work best there (the published settings).
PRESETS = {'davis': Preset('davis', 'davis', mem_freq=5, quality_thr=0.8, memory_thr=20),
           'youtube': Preset('youtube', 'youtube', mem_freq=5, quality_thr=0.75, memory_thr=10)}
DAVIS, YOUTUBE = PRESETS['davis'], PRESETS['youtube']


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

    def __init__(self, mem_freq=DAVIS.mem_freq, quality_thr=DAVIS.quality_thr, capacity=DAVIS.memory_thr,
                 policy='quality'):
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


    def settings(self):
        return {'mem_freq': self.mem_freq, 'quality_thr': self.quality_thr, 'capacity': self.capacity,
                'policy': self.policy}

    def state_dict(self):
        """Every entry (tensors as they are) and the counters: what the next decision depends on."""
        def entry(e):   # not dataclasses.asdict: it would deep-copy the tensors
            return None if e is None else {'frame': e.frame, 'key': e.key, 'value': e.value,
                                           'objects': list(e.objects), 'quality': e.quality, 'order': e.order}
        return {'settings': self.settings(), 'permanent': [entry(e) for e in self.permanent],
                'stored': [entry(e) for e in self.stored], 'temporary': entry(self.temporary),
                'last_stored_frame': self.last_stored_frame, 'stored_count': self.stored_count}

    def load_state_dict(self, state, device=None):
        """Restores a state_dict() of a bank with the same settings (ValueError otherwise)."""
        if state['settings'] != self.settings():
            raise ValueError(f'memory state saved with {state["settings"]}, this bank has {self.settings()}')

        def entry(d):
            if d is None:
                return None
            return MemoryEntry(d['frame'], d['key'].to(device), d['value'].to(device), tuple(d['objects']),
                               d['quality'], d['order'])
        self.permanent = [entry(d) for d in state['permanent']]
        self.stored = [entry(d) for d in state['stored']]
        self.temporary = entry(state['temporary'])
        self.last_stored_frame = state['last_stored_frame']
        self.stored_count = state['stored_count']


def memory_summary(decisions, bank):
    """One line on a video's memory: decisions (counts per Decision reason) and the bank at the end."""
    stored = decisions['stored'] + decisions['replaced']
    return (f'memory: {stored} frames stored ({decisions["replaced"]} replacing older ones), '
            f'{decisions["low_quality"]} rejected by the quality gate, '
            f'{decisions["not_due"]} not due (--mem_freq {bank.mem_freq}); at the end {len(bank.entries())} entries '
            f'({len(bank.permanent)} permanent, {len(bank.stored)} stored, {int(bank.temporary is not None)} previous)')
