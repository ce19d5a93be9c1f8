"""Frame/mask <-> tensor conversion and the pad-to-16 used by the network."""
import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def at_least_fp32(x):
    """fp16/bf16 -> fp32 (precision-critical steps under autocast); fp32 and fp64 unchanged."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def frame_to_tensor(rgb, device='cpu', size=None):
    """HxWx3 uint8 -> (1,3,H,W) ImageNet-normalised float, optionally resized to size=(h, w).

    Resizing is antialiased bicubic, close to the PIL bicubic resize of the
    published YouTube-VOS reader (plain bilinear aliases when shrinking).
    """
    x = torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(2, 0, 1).float().div_(255)
    x = x.unsqueeze(0)
    if size is not None and tuple(size) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=tuple(size), mode='bicubic', align_corners=False, antialias=True).clamp_(0, 1)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


def labels_to_masks(labels, objects, device='cpu', size=None):
    """HxW label map -> (K,1,H,W) float one-hot masks of `objects`; optionally resized (nearest)."""
    lab = torch.from_numpy(np.ascontiguousarray(labels)).to(device)
    masks = torch.stack([(lab == o) for o in objects]).unsqueeze(1).float()
    if size is not None and tuple(size) != tuple(masks.shape[-2:]):
        masks = F.interpolate(masks, size=size, mode='nearest')
    return masks


def pad_divide_by(x, d=16):
    """Zero-pads the last two dims to multiples of d, split evenly (odd pixel at bottom/right).

    Returns the padded tensor and pad = (left, right, top, bottom).
    """
    h, w = x.shape[-2:]
    ph, pw = (d - h % d) % d, (d - w % d) % d
    pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    return F.pad(x, pad), pad


def unpad(x, pad):
    left, right, top, bottom = pad
    h, w = x.shape[-2:]
    return x[..., top:h - bottom, left:w - right]


def probs_to_labels(prob, size=None):
    """(K+1,1,h,w) probabilities -> HxW uint8 argmax (0 = background), resized bilinearly first."""
    if size is not None and tuple(size) != tuple(prob.shape[-2:]):
        prob = F.interpolate(prob.float(), size=size, mode='bilinear', align_corners=False)
    # max().indices, not argmax(): the same first-maximum answer, but CPU argmax over the leading
    # dimension is 40x slower here (50 ms per 480p frame)
    return prob[:, 0].max(0).indices.to(torch.uint8).cpu().numpy()
