"""Training losses: bootstrapped cross-entropy on the masks, MSE on the quality scores."""
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
        """logits (B,C,H,W), target (B,H,W) class indices -> (loss, p used)."""
        p = self.fraction(it)
        if p >= 1.0:
            return F.cross_entropy(logits, target), p
        pixel_loss = F.cross_entropy(logits, target, reduction='none').flatten()
        hardest, _ = torch.topk(pixel_loss, max(1, int(pixel_loss.numel() * p)), sorted=False)
        return hardest.mean(), p


def intersection_union(pred, gt):
    """Boolean masks (..., H, W) -> per-mask intersection and union pixel counts (float)."""
    inter = (pred & gt).flatten(-2).sum(-1).float()
    union = (pred | gt).flatten(-2).sum(-1).float()
    return inter, union


def iou_from_counts(inter, union):
    """IoU from pixel counts; 1 when both masks are empty (nothing to find, nothing found)."""
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def mask_iou(pred, gt):
    """Per-mask IoU of boolean masks (..., H, W)."""
    return iou_from_counts(*intersection_union(pred, gt))


def quality_loss(scores, target_iou, present):
    """MSE between predicted quality scores and the IoU they should predict, over present objects."""
    if not present.any():
        return scores.sum() * 0  # keeps the graph (and DDP's gradient buckets) intact
    return F.mse_loss(scores[present], target_iou[present])
