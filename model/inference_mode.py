"""Inference-only rewrites of a loaded QDMN: BatchNorm folded, channels-last, optional bf16 convolutions.

They keep the network's function (tests compare with the golden outputs)
but change its state dict, so they are applied after the checkpoint is loaded.
"""
import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from model.checkpoint import build_network
from util.cli import precision

# Stays fp32 under bf16: its scores are compared with the memory gate's threshold.
FP32_MODULES = ('score',)


def fold_batchnorm(module):
    """Folds every BatchNorm into the convolution registered just before it, which feeds it.

    That holds for every conv/BN pair of QDMN (trunks, ASPP); tests check the
    folded network computes the same outputs. Eval mode only: the folded
    weights bake in the running statistics.
    """
    children = list(module.named_children())
    for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(module, bn_name, nn.Identity())
    for child in module.children():
        fold_batchnorm(child)
    return module


class Bf16Conv2d(nn.Conv2d):
    """A convolution computed in bfloat16 (weights stored so) that returns fp32.

    Only the convolution's inputs are rounded: residual sums, activations
    and everything outside the convolutions stay fp32, which keeps the
    golden masks where plain bf16 autocast (every activation bf16) does not.
    """

    @classmethod
    def from_conv(cls, conv):
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                  conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                  device=conv.weight.device, dtype=torch.bfloat16)
        with torch.no_grad():
            new.weight.copy_(conv.weight)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        return new.train(conv.training)

    def forward(self, x):
        return self._conv_forward(x.to(torch.bfloat16), self.weight, self.bias).float()


def bf16_convolutions(module, keep_fp32=FP32_MODULES):
    """Replaces every Conv2d outside the `keep_fp32` children by a Bf16Conv2d."""
    for name, child in module.named_children():
        if name in keep_fp32:
            continue
        if type(child) is nn.Conv2d:
            setattr(module, name, Bf16Conv2d.from_conv(child))
        else:
            bf16_convolutions(child, keep_fp32=())
    return module


def optimize_for_inference(network, bf16=False):
    """Folds BatchNorm, makes the weights channels-last (oneDNN's and cuDNN's preferred layout,
    which convolutions then pass on to their outputs) and, with `bf16`, computes the
    convolutions in bfloat16 (CPU --amp; see util.cli.precision)."""
    network = fold_batchnorm(network.eval())
    if bf16:
        network = bf16_convolutions(network)
    return network.to(memory_format=torch.channels_last)


def inference_network(path, device, amp=False):
    """The checkpoint at `path` built and optimised for inference on `device`; returns (network, precision).

    precision is util.cli.precision's: with --amp, 'fp16' (the caller's autocast) on CUDA,
    'bf16' convolutions on a CPU that has them natively, else 'fp32'.
    """
    mode = precision(device, amp)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True  # one shape per video: the tuned kernels are reused every frame
    return optimize_for_inference(build_network(path, device), bf16=mode == 'bf16'), mode
