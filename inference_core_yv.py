"""YouTube-VOS inference engine: objects enter on any frame, each with its own memory.

Fed one frame at a time (streaming, like the DAVIS engine): the engine keeps
the memory bank and the previous frame's probabilities only, so its memory
is bounded by the number of labelled frames times the bank's capacity,
whatever the video's length.

On a frame carrying labels the frame is first segmented from memory (when
objects already exist), then the labelled masks are merged over that
prediction (labels win where they overlap), re-aggregated, and the frame is
encoded for every object seen so far and kept permanently. Each labelled
frame starts a new propagation pass, as published: the frames the previous
pass stored become permanent, the stored list, its running count and the
mem_freq counter restart, and the quality reference becomes the first
propagated frame after it. Propagated frames go through the bank's quality
gate and capacity, so memory stays bounded by (labelled frames) x
(capacity + 2) + 1 entries: per pass its labelled frame and at most
capacity + 1 stored frames, plus the previous frame.
"""
import warnings

import numpy as np
import torch

from inference_core import nonzero_mean, relative_quality, segment_frame, with_last_flag
from inference_memory_bank import MemoryBank
from model.aggregate import aggregate
from util.tensor_util import labels_to_masks, pad_divide_by, probs_to_labels, unpad


class InferenceCoreYV:
    """Channel k+1 of every returned probability tensor is object `objects[k]` (original id).

    num_objects: how many objects the whole video has, when known in advance.
    The published YouTube engine gates the query with a softmax over its
    (already aggregated) probabilities of all the video's objects, those not
    entered yet counting as zero channels; the golden fixture only matches
    with that. Without it (None) only the objects seen so far are counted.
    """

    def __init__(self, network, top_k=50, mem_freq=5, quality_thr=0.75, memory_thr=10, num_objects=None,
                 km_sigma=None, memory_policy='quality', memory_log=None):
        self.net = network
        self.top_k = top_k
        self.km_sigma = km_sigma
        self.bank = MemoryBank(mem_freq, quality_thr, memory_thr, memory_policy)
        self.num_objects = num_objects
        self.objects = []           # original label ids in order of appearance
        self.frame_idx = -1         # counts step() calls: 0 is the first labelled frame
        self.prob = None            # (K+1,1,H,W) padded, aggregated probabilities of the last frame
        self.pad = None
        self.reference = None       # quality reference of the current propagation pass
        self.needs_reference = False
        self.last_scores = None     # per-object quality scores of the last memory encoding
        self.last_decision = None   # the bank's decision on the last propagated frame
        self.decisions = {'stored': 0, 'replaced': 0, 'not_due': 0, 'low_quality': 0}
        self.memory_log = memory_log    # util.memory_log.MemoryLog recording every frame's decision, or None

    @torch.no_grad()
    def step(self, frame, new_labels=None, memorize=True):
        """frame (1,3,H,W) normalised; new_labels HxW ids labelled on this frame (0 = none).

        Returns the unpadded (K+1,1,H,W) probabilities. `memorize=False`
        skips the memory encoding (the last frame of a video).
        """
        frame, self.pad = pad_divide_by(frame)
        self.frame_idx += 1
        labels = self._as_label_map(new_labels, frame)
        if self.objects:
            self.prob = segment_frame(self.net, self.bank, self.objects, frame, self._gating_probs(), self.top_k,
                                      self.km_sigma)
        elif labels is None:
            raise ValueError('the first frame given to InferenceCoreYV must carry labels')
        if labels is not None:
            self._merge(labels, frame)
        if memorize:
            self._memorize(frame, labelled=labels is not None)
        else:
            self._log(None)
        return unpad(self.prob, self.pad)

    def to_ids(self, index_map):
        """HxW channel indices (0 background, k = objects[k-1]) -> original label ids."""
        lut = np.array([0] + self.objects, dtype=np.uint8)
        return lut[index_map]

    def _as_label_map(self, new_labels, frame):
        """numpy HxW of the labels, or None when nothing is labelled."""
        if new_labels is None:
            return None
        labels = new_labels.cpu().numpy() if torch.is_tensor(new_labels) else np.asarray(new_labels)
        h, w = frame.shape[-2:]
        left, right, top, bottom = self.pad
        if labels.shape != (h - top - bottom, w - left - right):
            raise ValueError(f'labels {labels.shape} do not match the frame {(h - top - bottom, w - left - right)}')
        return labels if labels.any() else None

    def _gating_probs(self):
        """Probabilities whose foreground max gates the query (see the class docstring)."""
        prob = self.prob
        missing = (self.num_objects or 0) - len(self.objects)
        if missing > 0:
            prob = torch.cat([prob, prob.new_zeros((missing,) + prob.shape[1:])])
        return torch.softmax(prob, 0)

    def _merge(self, labels, frame):
        ids = [int(i) for i in np.unique(labels) if i]
        fresh = [i for i in ids if i not in self.objects]
        if self.num_objects is not None and len(self.objects) + len(fresh) > self.num_objects:
            raise ValueError(f'more objects than num_objects={self.num_objects}')
        self.objects += fresh
        masks, _ = pad_divide_by(labels_to_masks(labels, ids, frame.device).to(frame.dtype))
        objs = masks[:0] if self.prob is None else self.prob[1:]
        objs = torch.cat([objs, objs.new_zeros((len(fresh),) + objs.shape[1:])])
        # Labels win: every other object is cleared where any labelled mask is.
        objs = objs.masked_fill(masks.sum(0, keepdim=True) > 0.5, 0)
        for row, i in enumerate(ids):
            objs[self.objects.index(i)] = masks[row]
        self.prob = aggregate(objs)

    def _memorize(self, frame, labelled):
        key, value, scores = self.net.encode_memory(frame, self.prob[1:])
        self.last_scores = scores
        if labelled:
            self.bank.start_pass()
            decision = self.bank.add_permanent(self.frame_idx, key, value, self.objects)
            self.needs_reference = True
            self.last_decision = None
            self._log(decision, scores)
            return
        if self.needs_reference:
            self.needs_reference = False
            self.reference = nonzero_mean(scores)
            if self.reference is None:
                warnings.warn('the quality head scores every object 0 on the first propagated frame; '
                              'gating on absolute instead of relative quality until the next labelled frame')
        # as published on YouTube-VOS: objects scoring exactly 0 are left out of every frame's mean
        quality = relative_quality(nonzero_mean(scores) or 0.0, self.reference)
        self.last_decision = self.bank.offer(self.frame_idx, key, value, self.objects, quality)
        self.decisions[self.last_decision.reason] += 1
        self._log(self.last_decision, scores)

    def _log(self, decision, scores=None):
        if self.memory_log is not None:
            scores = None if scores is None else dict(zip(self.objects, scores.tolist()))
            self.memory_log.record(self.frame_idx, decision, self.bank, scores)


def propagate_yv(core, frames, labels_by_index, out_size=None):
    """Runs `core` over all `frames` ((1,3,H,W) tensors, any iterable) of one video.

    labels_by_index: dict frame index -> HxW label map at processing size.
    Yields (index, HxW uint8 map of original ids at out_size) for every frame
    from the first labelled one on; earlier frames yield nothing. The last
    frame is segmented but not encoded into memory.
    """
    if not labels_by_index:
        raise ValueError('propagate_yv needs at least one labelled frame')
    start = min(labels_by_index)
    for t, (frame, is_last) in enumerate(with_last_flag(frames)):
        if t < start:
            continue
        prob = core.step(frame, labels_by_index.get(t), memorize=not is_last)
        yield t, core.to_ids(probs_to_labels(prob, out_size))
