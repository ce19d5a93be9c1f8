"""A view of the memory (--save_memory_log): every frame's quality scores and memory decision, as CSV and plot.

The engines fill a MemoryLog at the point where their bank decides
(`InferenceCore(..., memory_log=MemoryLog(...))`); this module only keeps
those records and writes them. CSV columns: frame, name, score_<object id>
(one per object, empty before the object enters), quality (the relative
quality the gate saw), decision, memory (permanent and stored frames after
the decision).
"""
import csv
import os
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

from util.output import atomic_file


@dataclass
class FrameRecord:
    frame: int                      # index in the video
    scores: Dict[int, float]        # object id -> quality score of this frame's memory encoding (empty: not encoded)
    reason: str                     # the bank's Decision.reason, or 'not_encoded' (the last frame)
    quality: Optional[float]        # relative quality the gate saw; None for permanent and not encoded frames
    evicted: Optional[int]          # the frame this one replaced in memory
    memory: Tuple[int, ...]         # permanent and stored frames after the decision

    @property
    def stored(self):
        return self.reason in ('stored', 'replaced')

    @property
    def permanent(self):
        return self.reason in ('first_frame', 'labelled')

    @property
    def decision(self):
        return decision_text(self.reason, self.evicted)


def decision_text(reason, evicted=None):
    """'first frame', 'labelled', 'stored', 'replaced <frame>', 'not due', 'low quality' or 'not encoded'."""
    return f'replaced {evicted}' if reason == 'replaced' else reason.replace('_', ' ')


class MemoryLog:
    """The records of one video, in the order the engine saw its frames.

    object_ids[k]: the id of the DAVIS engine's object k (None: keep the
    engine's keys; the YouTube-VOS engine's are the label ids already).
    first_frame: the video index of the engine's frame 0 (the YouTube-VOS
    engine starts at the first labelled frame).
    """

    def __init__(self, object_ids=None, first_frame=0):
        self.object_ids = object_ids
        self.first_frame = first_frame
        self.records = []
        self.gate = None        # the bank's quality threshold (None: its policy has no gate)
        self.policy = None

    def record(self, frame, decision, bank, scores=None):
        """frame: the engine's index; decision: the bank's, None when the frame is not encoded;
        bank: the memory after the decision; scores: {engine object: score} of the encoding."""
        shift = self.first_frame
        self.gate, self.policy = bank.gate, bank.policy   # the same on every call; the plot draws them
        scores = {self._object_id(k): float(s) for k, s in (scores or {}).items()}
        if decision is None:
            reason, quality, evicted = 'not_encoded', None, None
        else:
            reason, quality = decision.reason, decision.quality
            evicted = None if decision.evicted_frame is None else decision.evicted_frame + shift
        self.records.append(FrameRecord(frame + shift, scores, reason, quality, evicted,
                                        tuple(f + shift for f in bank.kept_frames())))

    def state_dict(self):
        """The records so far as plain data (for saving an engine's state mid-video)."""
        return {'object_ids': self.object_ids, 'first_frame': self.first_frame, 'gate': self.gate,
                'policy': self.policy, 'records': [dict(asdict(r), memory=list(r.memory)) for r in self.records]}

    def load_state_dict(self, state):
        self.object_ids, self.first_frame = state['object_ids'], state['first_frame']
        self.gate, self.policy = state['gate'], state['policy']
        self.records = [FrameRecord(**dict(r, memory=tuple(r['memory']))) for r in state['records']]

    def _object_id(self, key):
        return key if self.object_ids is None else self.object_ids[key]

    def write(self, folder, stem, frame_names):
        """Writes <folder>/<stem>.csv and <stem>.png, each complete or absent; returns their paths.

        frame_names: the names of the video's frames, by video index.
        """
        os.makedirs(folder, exist_ok=True)
        paths = os.path.join(folder, stem + '.csv'), os.path.join(folder, stem + '.png')
        with atomic_file(paths[0]) as tmp:
            self._write_csv(tmp, frame_names)
        with atomic_file(paths[1]) as tmp:
            plot_memory_log(self, tmp, title=stem)
        return paths

    def _write_csv(self, path, frame_names):
        objects = list(dict.fromkeys(k for r in self.records for k in r.scores))  # in order of appearance
        with open(path, 'w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(['frame', 'name'] + [f'score_{k}' for k in objects] + ['quality', 'decision', 'memory'])
            for r in self.records:
                writer.writerow([r.frame, frame_names[r.frame]] + [_cell(r.scores.get(k)) for k in objects]
                                + [_cell(r.quality), r.decision, ' '.join(map(str, r.memory))])


def _cell(value):
    return '' if value is None else f'{value:.6g}'


def plot_memory_log(log, path, title):
    """PNG of the relative quality over time with the gate, and every stored, evicted, rejected and labelled frame."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg   # only with --save_memory_log
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    records = log.records
    gated = [r for r in records if r.quality is not None]
    evicted = {r.evicted for r in records if r.evicted is not None}
    kept = [r for r in gated if r.stored and r.frame not in evicted]
    dropped = [r for r in gated if r.stored and r.frame in evicted]
    rejected = [r for r in gated if r.reason == 'low_quality']

    fig = Figure(figsize=(9, 3.4), dpi=100, layout='constrained')
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([r.frame for r in gated], [r.quality for r in gated], color='0.55', lw=1, marker='.', ms=3,
            label='relative quality')
    if log.gate is not None:
        ax.axhline(log.gate, color='tab:red', ls='--', lw=1, label=f'quality gate ({log.gate:g})')
    for rows, style in ((kept, dict(marker='o', color='tab:green', label='stored, kept')),
                        (dropped, dict(marker='X', color='tab:red', label='stored, evicted later')),
                        (rejected, dict(marker='v', color='tab:orange', label='rejected: low quality'))):
        if rows:
            ax.scatter([r.frame for r in rows], [r.quality for r in rows], s=28, zorder=3, **style)
    for i, r in enumerate(r for r in records if r.permanent):
        ax.axvline(r.frame, color='tab:purple', ls=':', lw=1.2, label=None if i else 'labelled (permanent)')
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel('frame')
    ax.set_ylabel('relative quality')
    gate = '' if log.gate is not None else f' (policy {log.policy}: no quality gate)'
    ax.set_title(f'{title}: {len(kept) + len(dropped)} frames stored, {len(dropped)} of them evicted, '
                 f'{len(rejected)} rejected{gate}', fontsize=10)
    ax.legend(loc='upper left', bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    fig.savefig(path, format='png')
