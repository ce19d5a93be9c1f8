"""DAVIS inference engine: propagates the first frame's masks, one frame at a time.

The engine holds only the memory bank and the previous frame's probabilities,
never the whole video, so its memory does not grow with the video's length
(the bank is bounded by its capacity). Callers feed frames as they decode
them and write each result as soon as it is returned.
"""
import warnings

import torch

from inference_memory_bank import MemoryBank
from model.aggregate import aggregate
from util.tensor_util import pad_divide_by, probs_to_labels, unpad


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


class InferenceCore:
    def __init__(self, network, top_k=50, mem_freq=5, quality_thr=0.8, memory_thr=20, km_sigma=None,
                 memory_policy='quality', memory_log=None):
        self.net = network
        self.top_k = top_k
        self.km_sigma = km_sigma
        self.bank = MemoryBank(mem_freq, quality_thr, memory_thr, memory_policy)
        self.frame_idx = -1
        self.prob = None            # previous frame's aggregated probabilities, padded
        self.pad = None
        self.num_objects = 0
        self.reference = None
        self.last_scores = None     # per-object quality scores of the last memory encoding
        self.last_decision = None
        self.decisions = {'stored': 0, 'replaced': 0, 'not_due': 0, 'low_quality': 0}
        self.memory_log = memory_log    # util.memory_log.MemoryLog recording every frame's decision, or None

    @torch.no_grad()
    def start(self, frame, masks):
        """frame (1,3,H,W) normalised, masks (K,1,H,W) one-hot -> (K+1,1,H,W) probabilities."""
        frame, self.pad = pad_divide_by(frame)
        masks, _ = pad_divide_by(masks.to(frame.dtype))
        self.num_objects = masks.shape[0]
        self.frame_idx = 0
        self.prob = aggregate(masks)
        key, value, scores = self.net.encode_memory(frame, self.prob[1:])
        self.last_scores = scores
        self.reference = nonzero_mean(scores)
        if self.reference is None:
            warnings.warn('the quality head scores the first frame 0 for every object; '
                          'gating on absolute instead of relative quality')
        decision = self.bank.add_permanent(0, key, value, range(self.num_objects), reason='first_frame')
        self._log(decision, scores)
        return unpad(self.prob, self.pad)

    @torch.no_grad()
    def step(self, frame, memorize=True):
        """Segments the next frame; `memorize=False` skips its memory encoding (last frame)."""
        frame, _ = pad_divide_by(frame)
        self.frame_idx += 1
        self.prob = segment_frame(self.net, self.bank, range(self.num_objects), frame, self.prob, self.top_k,
                                  self.km_sigma)
        if memorize:
            key, value, scores = self.net.encode_memory(frame, self.prob[1:])
            self.last_scores = scores
            quality = relative_quality(float(scores.float().mean()), self.reference)  # plain mean (SPEC §2)
            self.last_decision = self.bank.offer(self.frame_idx, key, value, range(self.num_objects), quality)
            self.decisions[self.last_decision.reason] += 1
            self._log(self.last_decision, scores)
        else:
            self._log(None)
        return unpad(self.prob, self.pad)

    def _log(self, decision, scores=None):
        if self.memory_log is not None:
            scores = None if scores is None else dict(enumerate(scores.tolist()))
            self.memory_log.record(self.frame_idx, decision, self.bank, scores)


def with_last_flag(iterable):
    """Yields (item, is_last) with one item of look-ahead."""
    it = iter(iterable)
    try:
        current = next(it)
    except StopIteration:
        return
    for nxt in it:
        yield current, False
        current = nxt
    yield current, True


def propagate(core, frames, first_masks, out_size=None):
    """Runs `core` over `frames` (iterable of (1,3,H,W) tensors) from `first_masks`.

    Yields one HxW uint8 index map (0 background, k = k-th object) per frame,
    resized to out_size, as soon as the frame is segmented.
    """
    for t, (frame, is_last) in enumerate(with_last_flag(frames)):
        prob = core.start(frame, first_masks) if t == 0 else core.step(frame, memorize=not is_last)
        yield probs_to_labels(prob, out_size)
