"""Soft aggregation of independent per-object probabilities."""
import torch


def aggregate(prob):
    """prob (K,1,H,W) object probabilities -> (K+1,1,H,W) with background first.

    Background is the probability that no object is present; the odds of
    every channel are then renormalised with a softmax over logits.
    """
    with_bg = torch.cat([torch.prod(1 - prob, dim=0, keepdim=True), prob], 0).clamp(1e-7, 1 - 1e-7)
    return torch.softmax(torch.log(with_bg / (1 - with_bg)), dim=0)
