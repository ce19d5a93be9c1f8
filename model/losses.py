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
        p = self.fraction(it)
        pixel_loss = F.cross_entropy(logits.reshape(1, logits.shape[-3], -1), target.reshape(1, -1),
                                     reduction='none').flatten()
        if p >= 1.0:
            return pixel_loss.mean(), p
        hardest, _ = torch.topk(pixel_loss, max(1, int(pixel_loss.numel() * p)), sorted=False)
        return hardest.mean(), p

    def batch(self, logits, target, selector, it):
        """Mean over the samples of their own bootstrapped CE (B,K+1,H,W logits, B,H,W target).

        Each sample mines its own hardest pixels; a sample without a second
        object is scored on (background, object 1) only, as published.
        """
        losses = []
        for j in range(logits.shape[0]):
            channels = 3 if selector.shape[1] > 1 and selector[j, 1] > 0.5 else 2
            loss, p = self(logits[j, :channels], target[j], it)
            losses.append(loss)
        return torch.stack(losses).mean(), p


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
