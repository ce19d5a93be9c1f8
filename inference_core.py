"""Inference engines: a shared base and the published DAVIS protocol (YouTube-VOS: inference_core_yv.py).

An engine holds only its memory bank and the previous frame's probabilities,
never the whole video, so its memory does not grow with the video's length
(the bank is bounded by its capacity). Callers feed frames as they decode
them and write each result as soon as it is returned.

Each frame takes two calls: segment() reads the memory (and merges the
frame's labels, if any), then commit() encodes the frame into memory, where
the bank decides whether to keep it, or skip_commit() leaves it out (the
published code never encodes a video's last frame). step() does both.
state_dict() / load_state_dict() save and restore everything the next frame
depends on, so a video can be continued in another process.
"""
import warnings
from dataclasses import asdict

import numpy as np
import torch

from inference_memory_bank import DAVIS, Decision, MemoryBank
from model.aggregate import aggregate
from util.iteration import with_last_flag
from util.labels import object_ids
from util.tensor_util import labels_to_masks, pad_divide_by, probs_to_labels, unpad


def nonzero_mean(scores):
    """Mean of the non-zero per-object scores (a dead ReLU score of 0 is left out); None when all are zero."""
    nonzero = scores[scores != 0]
    return float(nonzero.float().mean()) if nonzero.numel() else None


def relative_quality(mean_score, reference):
    """A frame's mean object score relative to the reference frame's.

    A reference of zero would divide by zero (the published code does), so
    the absolute mean score is used instead; the caller warned once.
    """
    return mean_score if reference is None else mean_score / reference


@torch.no_grad()
def segment_frame(net, bank, objects, frame, prev_prob, top_k, km_sigma=None):
    """One query step shared by both engines.

    frame (1,3,H,W) padded; prev_prob (K+1,1,H,W) the previous frame's
    aggregated probabilities (gates the query); each object reads its own
    memory in `bank` (top_k None: every memory pixel; km_sigma: kernelized
    read). Returns the new aggregated probabilities (K+1,1,H,W).
    """
    f16, f8, f4 = net.encode_query(frame)
    prev_fg = prev_prob[1:].max(0, keepdim=True)[0]
    _, qk, qv = net.query_key_value(f16, prev_fg)
    readout = torch.cat([net.read(*bank.read_tensors(k), qk, qv, top_k, km_sigma) for k in objects], 0)
    return aggregate(net.segment(readout, f8, f4).float())  # fp32 probabilities, also under --amp


class Engine:
    """What both protocols share: the query, label merging, memory encoding, the log and the state.

    `objects` are the keys of the objects in channel order (channel k+1 is
    objects[k]): label ids when frames come with label maps, 0..K-1 for the
    DAVIS engine's start(frame, masks). A subclass gives the protocol: which
    probabilities gate the query, what a labelled frame does to the memory
    and how a frame's quality is computed.
    """
    protocol = None

    def __init__(self, network, top_k, mem_freq, quality_thr, memory_thr, km_sigma, memory_policy, memory_log,
                 num_objects=None):
        self.net = network
        self.top_k = top_k
        self.km_sigma = km_sigma
        self.bank = MemoryBank(mem_freq, quality_thr, memory_thr, memory_policy)
        self.num_objects = num_objects
        self.objects = []
        self.frame_idx = -1         # counts segment() calls: 0 is the first labelled frame
        self.prob = None            # (K+1,1,H,W) padded, aggregated probabilities of the last frame
        self.pad = None
        self.reference = None       # the quality reference (None: absolute quality, see relative_quality)
        self.needs_reference = False
        self.last_scores = None     # per-object quality scores of the last memory encoding (None: not encoded)
        self.last_decision = None   # the bank's decision on the last encoded frame
        self.decisions = {'stored': 0, 'replaced': 0, 'not_due': 0, 'low_quality': 0}
        self.memory_log = memory_log    # util.memory_log.MemoryLog recording every frame's decision, or None
        self._pending = None        # (padded frame, labelled) segmented but neither committed nor skipped

    @torch.no_grad()
    def segment(self, frame, labels=None):
        """frame (1,3,H,W) normalised; labels HxW ids labelled on this frame (0 = none), or None.

        Returns the unpadded (K+1,1,H,W) probabilities. The frame waits for commit() or skip_commit().
        """
        frame, pad = pad_divide_by(frame)
        labels = self._as_label_map(labels, frame.shape[-2:], pad)
        ids = [] if labels is None else object_ids(labels)
        masks = None if labels is None else labels_to_masks(labels, ids, frame.device)
        return self._segment(frame, pad, masks, ids)

    def _segment(self, frame, pad, masks, ids):
        """The padded frame segmented from memory, then the (unpadded) one-hot `masks` of objects `ids` merged."""
        if self._pending is not None:
            raise RuntimeError('commit() or skip_commit() the previous frame before segmenting the next')
        if not self.objects and masks is None:
            raise ValueError(f'the first frame given to {type(self).__name__} must carry labels')
        self.pad = pad
        self.frame_idx += 1
        if self.objects:
            self.prob = segment_frame(self.net, self.bank, self.objects, frame, self._gating_probs(), self.top_k,
                                      self.km_sigma)
        if masks is not None:
            self._merge(masks, ids, frame)
        self._pending = (frame, masks is not None)
        return unpad(self.prob, self.pad)

    @torch.no_grad()
    def commit(self):
        """Encodes the segmented frame into memory; the bank keeps it or not. Nothing to do twice."""
        if self._pending is None:
            return
        frame, labelled = self._pending
        self._pending = None
        key, value, scores = self.net.encode_memory(frame, self.prob[1:])
        self.last_scores = scores
        if labelled:
            self.last_decision = self._keep_labelled(key, value, scores)
        else:
            self.last_decision = self.bank.offer(self.frame_idx, key, value, self.objects, self._quality(scores))
            self.decisions[self.last_decision.reason] += 1
        self._log(self.last_decision, scores)

    def skip_commit(self):
        """Leaves the segmented frame out of memory (the last frame of a video)."""
        if self._pending is None:
            return
        self._pending = None
        self.last_scores = self.last_decision = None
        self._log(None)

    def step(self, frame, labels=None, memorize=True):
        """segment() then commit(), or skip_commit() when not `memorize`."""
        prob = self.segment(frame, labels)
        self.commit() if memorize else self.skip_commit()
        return prob

    def to_ids(self, index_map):
        """HxW channel indices (0 background, k = objects[k-1]) -> the objects' label ids."""
        lut = np.array([0] + self.objects, dtype=np.uint8)
        return lut[index_map]

    def _as_label_map(self, labels, padded_size, pad):
        """numpy HxW of the labels, or None when nothing is labelled."""
        if labels is None:
            return None
        labels = labels.cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
        left, right, top, bottom = pad
        size = (padded_size[0] - top - bottom, padded_size[1] - left - right)
        if labels.shape != size:
            raise ValueError(f'labels {labels.shape} do not match the frame {size}')
        return labels if labels.any() else None

    def _merge(self, masks, ids, frame):
        """Labels win: every other object is cleared where any labelled mask is; then re-aggregated."""
        fresh = [i for i in ids if i not in self.objects]
        if self.num_objects is not None and len(self.objects) + len(fresh) > self.num_objects:
            raise ValueError(f'more objects than num_objects={self.num_objects}')
        self.objects += fresh
        masks, _ = pad_divide_by(masks.to(frame.dtype))
        objs = masks[:0] if self.prob is None else self.prob[1:]
        objs = torch.cat([objs, objs.new_zeros((len(fresh),) + objs.shape[1:])])
        objs = objs.masked_fill(masks.sum(0, keepdim=True) > 0.5, 0)
        for row, i in enumerate(ids):
            objs[self.objects.index(i)] = masks[row]
        self.prob = aggregate(objs)

    def _log(self, decision, scores=None):
        if self.memory_log is not None:
            scores = None if scores is None else dict(zip(self.objects, scores.tolist()))
            self.memory_log.record(self.frame_idx, decision, self.bank, scores)

    def _gating_probs(self):
        raise NotImplementedError

    def _keep_labelled(self, key, value, scores):
        """Adds a labelled frame to memory for good; returns the bank's Decision."""
        raise NotImplementedError

    def _quality(self, scores):
        """The relative quality of a propagated frame from its per-object scores."""
        raise NotImplementedError

    def settings(self):
        return {'protocol': self.protocol, 'top_k': self.top_k, 'km_sigma': self.km_sigma,
                'num_objects': self.num_objects, **self.bank.settings()}

    def state_dict(self):
        """Everything the next frame depends on: memory entries, the last probabilities, counters,
        the quality reference and pass state. Commits a frame still waiting (as the next segment()
        would first). Plain types and tensors only: torch.save/torch.load(weights_only=True) keep it."""
        self.commit()
        decision = None if self.last_decision is None else asdict(self.last_decision)
        return {'settings': self.settings(), 'objects': list(self.objects), 'frame_idx': self.frame_idx,
                'prob': self.prob, 'pad': None if self.pad is None else list(self.pad),
                'reference': self.reference, 'needs_reference': self.needs_reference,
                'last_scores': self.last_scores, 'last_decision': decision, 'decisions': dict(self.decisions),
                'bank': self.bank.state_dict()}

    def load_state_dict(self, state, device=None):
        """Restores a state_dict() of an engine with the same settings (ValueError otherwise)."""
        if state['settings'] != self.settings():
            raise ValueError(f'engine state saved with {state["settings"]}, this engine has {self.settings()}')
        self.bank.load_state_dict(state['bank'], device)
        self.objects = list(state['objects'])
        self.frame_idx = state['frame_idx']
        self.prob = None if state['prob'] is None else state['prob'].to(device)
        self.pad = None if state['pad'] is None else tuple(state['pad'])
        self.reference = state['reference']
        self.needs_reference = state['needs_reference']
        self.last_scores = None if state['last_scores'] is None else state['last_scores'].to(device)
        self.last_decision = None if state['last_decision'] is None else Decision(**state['last_decision'])
        self.decisions = dict(state['decisions'])
        self._pending = None


class InferenceCore(Engine):
    """The published DAVIS protocol: the first frame's labels are the objects and the quality
    reference (mean of its non-zero scores); a frame's quality is the plain mean of its scores
    over the reference. A later labelled frame is kept permanently; the reference stays."""
    protocol = 'davis'

    def __init__(self, network, top_k=DAVIS.top_k, mem_freq=DAVIS.mem_freq, quality_thr=DAVIS.quality_thr,
                 memory_thr=DAVIS.memory_thr, km_sigma=None, memory_policy='quality', memory_log=None):
        super().__init__(network, top_k, mem_freq, quality_thr, memory_thr, km_sigma, memory_policy, memory_log)

    @torch.no_grad()
    def start(self, frame, masks):
        """frame (1,3,H,W) normalised, masks (K,1,H,W) one-hot of objects 0..K-1 -> (K+1,1,H,W) probabilities."""
        padded, pad = pad_divide_by(frame)
        prob = self._segment(padded, pad, masks, list(range(masks.shape[0])))
        self.commit()
        return prob

    def _gating_probs(self):
        return self.prob

    def _keep_labelled(self, key, value, scores):
        first = not self.bank.permanent
        if first:
            self.reference = nonzero_mean(scores)
            if self.reference is None:
                warnings.warn('the quality head scores the first frame 0 for every object; '
                              'gating on absolute instead of relative quality')
        return self.bank.add_permanent(self.frame_idx, key, value, self.objects,
                                       reason='first_frame' if first else 'labelled')

    def _quality(self, scores):
        return relative_quality(float(scores.float().mean()), self.reference)   # plain mean, as published


def propagate(core, frames, first_masks, out_size=None):
    """Runs `core` over `frames` (iterable of (1,3,H,W) tensors) from `first_masks`.

    Yields one HxW uint8 index map (0 background, k = k-th object) per frame,
    resized to out_size, as soon as the frame is segmented.
    """
    for t, (frame, is_last) in enumerate(with_last_flag(frames)):
        prob = core.start(frame, first_masks) if t == 0 else core.step(frame, memorize=not is_last)
        yield probs_to_labels(prob, out_size)
