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

import torch

from inference_core import Engine, nonzero_mean, relative_quality
from inference_memory_bank import YOUTUBE
from util.iteration import with_last_flag
from util.tensor_util import probs_to_labels


class InferenceCoreYV(Engine):
    """Channel k+1 of every returned probability tensor is object `objects[k]` (original id).

    num_objects: how many objects the whole video has, when known in advance.
    The published YouTube engine gates the query with a softmax over its
    (already aggregated) probabilities of all the video's objects, those not
    entered yet counting as zero channels; the golden fixture only matches
    with that. Without it (None) only the objects seen so far are counted.
    """
    protocol = 'youtube'

    def __init__(self, network, top_k=YOUTUBE.top_k, mem_freq=YOUTUBE.mem_freq, quality_thr=YOUTUBE.quality_thr,
                 memory_thr=YOUTUBE.memory_thr, num_objects=None, km_sigma=None, memory_policy='quality',
                 memory_log=None):
        super().__init__(network, top_k, mem_freq, quality_thr, memory_thr, km_sigma, memory_policy, memory_log,
                         num_objects)

    def _gating_probs(self):
        """Probabilities whose foreground max gates the query (see the class docstring)."""
        prob = self.prob
        missing = (self.num_objects or 0) - len(self.objects)
        if missing > 0:
            prob = torch.cat([prob, prob.new_zeros((missing,) + prob.shape[1:])])
        return torch.softmax(prob, 0)

    def _keep_labelled(self, key, value, scores):
        self.bank.start_pass()
        self.needs_reference = True
        return self.bank.add_permanent(self.frame_idx, key, value, self.objects)

    def _quality(self, scores):
        if self.needs_reference:
            self.needs_reference = False
            self.reference = nonzero_mean(scores)
            if self.reference is None:
                warnings.warn('the quality head scores every object 0 on the first propagated frame; '
                              'gating on absolute instead of relative quality until the next labelled frame')
        # as published on YouTube-VOS: objects scoring exactly 0 are left out of every frame's mean
        return relative_quality(nonzero_mean(scores) or 0.0, self.reference)


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
