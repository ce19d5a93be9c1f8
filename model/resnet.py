"""ResNet-50 trunk (stem + layers 1-3) as used by both QDMN encoders.

Unlike torchvision, every convolution carries a bias (the published
checkpoint has one), and layer4 is never built.
"""
import torch
import torch.nn as nn

# torchvision's ResNet-50 weights, used only when training from scratch.
IMAGENET_URL = 'https://download.pytorch.org/models/resnet50-19c8e357.pth'

LAYER_BLOCKS = (3, 4, 6)      # blocks in layer1..layer3 of ResNet-50
LAYER_WIDTHS = (64, 128, 256)  # bottleneck width; output is 4x this


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch, width, stride=1):
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride), nn.BatchNorm2d(out_ch))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def make_layer(in_ch, width, blocks, stride):
    layers = [Bottleneck(in_ch, width, stride)]
    layers += [Bottleneck(width * Bottleneck.expansion, width) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def make_trunk(in_channels):
    """Returns (conv1, bn1, layer1, layer2, layer3) of a ResNet-50."""
    conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3)
    bn1 = nn.BatchNorm2d(64)
    layers, in_ch = [], 64
    for i, (width, blocks) in enumerate(zip(LAYER_WIDTHS, LAYER_BLOCKS)):
        layers.append(make_layer(in_ch, width, blocks, stride=1 if i == 0 else 2))
        in_ch = width * Bottleneck.expansion
    return (conv1, bn1, *layers)


def imagenet_to_trunk(imagenet_sd, layer1_name, in_channels):
    """Maps a torchvision ResNet-50 state dict onto a trunk's names.

    Extra input channels of conv1 (mask channels) are initialised
    orthogonally, as published (the caller zeroes the conv biases torchvision
    lacks, so the RGB path computes exactly the ImageNet features).
    """
    out = {}
    for name, tensor in imagenet_sd.items():
        if name.startswith(('fc.', 'layer4.')):
            continue
        if name.startswith('layer1.'):
            name = layer1_name + name[len('layer1'):]
        if name == 'conv1.weight' and in_channels != tensor.shape[1]:
            extra = tensor.new_empty(tensor.shape[0], in_channels - tensor.shape[1], *tensor.shape[2:])
            tensor = torch.cat([tensor, torch.nn.init.orthogonal_(extra)], 1)
        out[name] = tensor
    return out
