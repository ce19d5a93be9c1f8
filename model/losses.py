"""Training losses as published: per-sample bootstrapped cross-entropy, MSE on the quality scores."""
import torch
import torch.nn.functional as F


class BootstrappedCE:
    """Cross-entropy that, once warmed up, averages only the hardest top-p pixels.

    Plain CE before `start` iterations; then p falls linearly from 1 to
    `top_p` at `end` and stays there. Hard-pixel mining keeps easy background
    from dominating once the masks are roughly right.
    """

    def __init__(self, start=20000, end=70000, top_p=0.15):
        self.start, self.end, self.top_p = start, end, top_p

    def fraction(self, it):
        if it < self.start:
            return 1.0
        if it >= self.end:
            return self.top_p
        return self.top_p + (1 - self.top_p) * (self.end - it) / (self.end - self.start)

    def __call__(self, logits, target, it):
        """logits (C,H,W) or (1,C,H,W) of one sample, target (H,W) class indices -> (loss, p used)."""
        loss, p = self._mined(logits.reshape(1, logits.shape[-3], -1), target.reshape(1, -1), it)
        return loss[0], p

    def batch(self, logits, target, selector, it):
        """Mean over the samples of their own bootstrapped CE (B,K+1,H,W logits, B,H,W target).

        Each sample mines its own hardest pixels; a sample without a second
        object is scored on (background, object 1) only, as published: its
        object-2 logit is -inf, which leaves the softmax of the other two exactly
        as without it. The check stays on the device (no wait for the GPU).
        """
        if selector.shape[1] > 1:
            absent = (selector[:, 1] <= 0.5).view(-1, 1, 1, 1)
            logits = torch.cat([logits[:, :2], logits[:, 2:3].masked_fill(absent, float('-inf'))], 1)
        loss, p = self._mined(logits.flatten(2), target.flatten(1), it)
        return loss.mean(), p

    def _mined(self, logits, target, it):
        """logits (B,C,N), target (B,N) -> each sample's bootstrapped CE (B,), p."""
        p = self.fraction(it)
        pixel_loss = F.cross_entropy(logits, target, reduction='none')
        if p >= 1.0:
            return pixel_loss.mean(1), p
        hardest, _ = torch.topk(pixel_loss, max(1, int(pixel_loss.shape[1] * p)), dim=1, sorted=False)
        return hardest.mean(1), p


def intersection_union(pred, gt):
    """Boolean masks (..., H, W) -> per-mask intersection and union pixel counts (float)."""
    inter = (pred & gt).flatten(-2).sum(-1).float()
    union = (pred | gt).flatten(-2).sum(-1).float()
    return inter, union


def quality_target(prob, gt):
    """Per-sample IoU target of the quality head (published rule).

    prob, gt (B,K,H,W): the mean over all K slots of IoU(prob > 0.5, gt),
    an empty union counting 0, so an absent second object pulls the target
    down exactly as in the published training.
    """
    inter, union = intersection_union(prob.detach() > 0.5, gt > 0.5)
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union)).mean(1)


def quality_loss(scores, target):
    """Squared error between each sample's mean slot score (B,K) and its target (B,), over the batch."""
    return ((scores.mean(1) - target) ** 2).sum() / scores.shape[0]
