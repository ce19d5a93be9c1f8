"""Inference-only rewrites of a loaded QDMN: BatchNorm folded, channels-last, optional bf16 convolutions.

They keep the network's function (tests compare with the golden outputs)
but change its state dict, so they are applied after the checkpoint is loaded.
"""
import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.checkpoint import build_network, random_init_skipped
from model.modules import ASPP, ResBlock
from model.resnet import Bottleneck
from util.allocator import keep_freed_activations
from util.device import configure_cuda, precision

# CPU bf16 runs on oneDNN (util.device.native_bf16 requires it). The ResNet trunks run wholly in
# bf16; the quality head stays fp32 (its scores are compared with the memory gate's threshold);
# every other convolution is a Bf16Conv2d.
BF16_TRUNKS = ('rgb_encoder', 'mask_rgb_encoder')
FP32_MODULES = ('score',)


def fold_batchnorm(module):
    """Folds every BatchNorm into the convolution registered just before it, which feeds it.

    That holds for every conv/BN pair of QDMN (trunks, ASPP); tests check the
    folded network computes the same outputs. Eval mode only: the folded
    weights bake in the running statistics.
    """
    children = list(module.named_children())
    for (_, conv), (bn_name, bn) in zip(children, children[1:]):
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            fold_into(conv, bn)
            setattr(module, bn_name, nn.Identity())
    for child in module.children():
        fold_batchnorm(child)
    return module


@torch.no_grad()
def fold_into(conv, bn):
    """Makes `conv` compute conv followed by the eval-mode `bn`, in place: the arithmetic of
    torch's fuse_conv_bn_weights (so the same weights, bit for bit) without its copy of every
    tensor, which costs a quarter of a second of start-up on QDMN."""
    inv_std = torch.rsqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.bias = nn.Parameter((bias - bn.running_mean) * inv_std * bn.weight + bn.bias, requires_grad=False)
    conv.weight.mul_((bn.weight * inv_std).reshape(-1, 1, 1, 1))


class Bf16Module(nn.Module):
    """Runs `module` wholly in bfloat16 (weights, activations, residual sums); inputs are cast
    to bf16 and the outputs stay bf16.

    For the ResNet trunks: memory-bound at 1/4 resolution, they gain most
    from half-size activations, and their rounding costs the golden masks least.
    Their outputs feed bf16 convolutions (which would round them anyway), the
    fp32 quality head, and the query gate, whose arithmetic promotes them to
    fp32: returning bf16 saves two conversions of f4 and f8 and changes no value.
    """

    def __init__(self, module):
        super().__init__()
        self.module = module.to(torch.bfloat16)

    def forward(self, *inputs):
        return self.module(*(x.to(torch.bfloat16) for x in inputs))


# conv -> (input shape, its weight reordered into oneDNN's layout for that shape); outside the
# modules, so that copying or saving a network never meets oneDNN's opaque tensors. The inference
# network's weights never change after it is built, so a reordered weight never goes stale.
_PACKED_WEIGHTS = weakref.WeakKeyDictionary()


def packed_weight(conv, x):
    """conv's bf16 weight in the layout oneDNN picks for input `x`, reordered once per input shape
    (a plain weight is reordered at every call: 3-9 % of a 1/16-resolution convolution's time)."""
    shape, packed = _PACKED_WEIGHTS.get(conv, (None, None))
    if shape != x.shape:
        shape, packed = x.shape, torch.ops.mkldnn._reorder_convolution_weight(
            conv.weight, conv.padding, conv.stride, conv.dilation, conv.groups, list(x.shape))
        _PACKED_WEIGHTS[conv] = shape, packed
    return packed


def conv_post_ops(conv, x, relu=False, add=None):
    """conv(x), then + `add` and/or ReLU inside the convolution (oneDNN post-ops): the result is
    written once, rounded once, with no extra pass over it. `add` implies the ReLU."""
    args = (packed_weight(conv, x), conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups)
    if add is None:
        return torch.ops.mkldnn._convolution_pointwise(x, *args, 'relu' if relu else 'none', [], '')
    return torch.ops.mkldnn._convolution_pointwise.binary(x, add, *args, 'add', None, 'relu', [], '')


class FusedBottleneck(Bottleneck):
    """A bf16 Bottleneck with BatchNorm folded whose ReLUs and residual sum run inside its
    convolutions (conv_post_ops): the trunks spend a sixth of their time on those passes
    otherwise. The sum is rounded once instead of twice, which brings the trunk outputs slightly
    closer to fp32 (tests/test_amp.py); the golden tests hold."""

    def forward(self, x):
        # downsample: a convolution and its folded BatchNorm, now an Identity
        identity = x if self.downsample is None else conv_post_ops(self.downsample[0], x)
        out = conv_post_ops(self.conv1, x, relu=True)
        out = conv_post_ops(self.conv2, out, relu=True)
        return conv_post_ops(self.conv3, out, add=identity)


class FusedResBlock(ResBlock):
    """A decoder ResBlock of Bf16Conv2d: its input rounded to bf16 once for both branches and the
    ReLU after conv1 run inside conv1 (conv_post_ops). The same values as ResBlock's forward:
    ReLU and rounding to bf16 commute."""

    def forward(self, x):
        xb = x.to(torch.bfloat16)
        r = self.conv2(conv_post_ops(self.conv1, F.relu(xb), relu=True))
        if self.downsample is not None:
            x = self.downsample(xb)
        return x + r


class Bf16Conv2d(nn.Conv2d):
    """A convolution computed in bfloat16 (weights stored so) that returns fp32, or its bf16
    result as it is where `bf16_output` is set (see bf16_between_convolutions).

    Only the convolution's inputs and output are rounded: residual sums,
    activations and everything else stay fp32. In the key/value projections,
    ASPP and decoder this keeps the golden masks where bf16 activations
    (plain bf16 autocast) do not.
    """
    bf16_output = False

    @classmethod
    def from_conv(cls, conv):
        with random_init_skipped():  # every weight is copied from `conv` below
            new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                      device=conv.weight.device, dtype=torch.bfloat16)
        with torch.no_grad():
            new.weight.copy_(conv.weight)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        return new.train(conv.training)

    def forward(self, x):
        out = conv_post_ops(self, x.to(torch.bfloat16))
        return out if self.bf16_output else out.float()


def bf16_convolutions(module):
    """Replaces every Conv2d of `module` by a Bf16Conv2d."""
    for name, child in module.named_children():
        if type(child) is nn.Conv2d:
            setattr(module, name, Bf16Conv2d.from_conv(child))
        else:
            bf16_convolutions(child)
    return module


def fuse_post_ops(network):
    """Turns the Bottlenecks and ResBlocks of the bf16 `network` into their fused forms in place:
    the same modules and weights (the state dict keeps its names), another forward."""
    for module in network.modules():
        fused = {Bottleneck: FusedBottleneck, ResBlock: FusedResBlock}.get(type(module))
        if fused is not None:
            module.__class__ = fused  # subclasses with no state of their own
    return network


def bf16_between_convolutions(network):
    """Lets the Bf16Conv2d whose outputs reach only ReLUs, other convolutions (which round their
    input to bf16) or a sum with an fp32 tensor return bf16: their values are bf16 already, so
    every value computed stays the same and each such convolution saves two memory passes.

    ResBlock: conv1 (-> ReLU -> conv2) and conv2 (-> + the fp32 block input or the fp32
    downsample). ASPP: the branches (-> ReLU -> concatenation -> conv1) and conv1 (-> ReLU ->
    the decoder's compress block, whose downsample returns fp32). Every other convolution feeds
    a sum with another convolution's output, an interpolation or the memory, and returns fp32.
    """
    for module in network.modules():
        if isinstance(module, ResBlock):
            convs = [module.conv1, module.conv2]
        elif isinstance(module, ASPP):
            convs = [module.aspp1.atrous_conv, module.aspp2.atrous_conv, module.aspp3.atrous_conv,
                     module.aspp4.atrous_conv, module.global_avg_pool[1], module.conv1]
        else:
            continue
        for conv in convs:
            conv.bf16_output = True
    return network


def to_bf16(network):
    """The CPU --amp network: trunks in bf16, the quality head in fp32, other convolutions Bf16Conv2d."""
    for name, child in network.named_children():
        if name in BF16_TRUNKS:
            setattr(network, name, Bf16Module(child))
        elif name not in FP32_MODULES:
            setattr(network, name, Bf16Conv2d.from_conv(child) if type(child) is nn.Conv2d
                    else bf16_convolutions(child))
    return fuse_post_ops(bf16_between_convolutions(network))


def optimize_for_inference(network, bf16=False):
    """Folds BatchNorm, makes the weights channels-last (oneDNN's and cuDNN's preferred layout,
    which convolutions then pass on to their outputs) and, with `bf16`, computes the
    convolutions in bfloat16 (CPU --amp; see util.device.precision)."""
    network = fold_batchnorm(network.eval())
    if bf16:
        network = to_bf16(network)
    return network.to(memory_format=torch.channels_last)


def inference_network(path, device, amp=False, fixed_shapes=True):
    """The checkpoint at `path` built and optimised for inference on `device`; returns (network, precision).

    fixed_shapes: the engine's shapes stay the same through a video (the DAVIS engine; not the
    YouTube-VOS one, whose objects join mid-video), so CUDA may tune kernels per shape.

    precision is util.device.precision's: with --amp, 'fp16' (the caller's autocast) on CUDA,
    'bf16' convolutions on a CPU that has them natively, else 'fp32'. On the CPU it also
    keeps freed activations in the process (util.allocator).
    """
    mode = precision(device, amp)
    if device.type == 'cpu':
        keep_freed_activations()
    configure_cuda(device, amp, fixed_shapes)
    return optimize_for_inference(build_network(path, device), bf16=mode == 'bf16'), mode
