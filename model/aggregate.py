"""Soft aggregation of independent per-object probabilities."""
import torch

from util.tensor_util import at_least_fp32


def aggregate_logits(prob, dim=0):
    """Object probabilities -> logits of (background, objects) along `dim`.

    Background is the probability that no object is present; each channel
    is clamped and turned into log-odds so a softmax renormalises them.
    In fp32 at least, also under autocast: fp16 cannot tell 1 - 1e-7 from 1.
    """
    prob = at_least_fp32(prob)
    bg = torch.prod(1 - prob, dim=dim, keepdim=True)
    with_bg = torch.cat([bg, prob], dim).clamp(1e-7, 1 - 1e-7)
    return torch.log(with_bg / (1 - with_bg))


def aggregate(prob, dim=0):
    """prob (K,1,H,W) (objects along `dim`) -> probabilities with background first."""
    return torch.softmax(aggregate_logits(prob, dim), dim=dim)
