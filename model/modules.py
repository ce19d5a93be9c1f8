"""Building blocks of the QDMN network (names match the published state dict)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from model.resnet import make_trunk
from util.tensor_util import at_least_fp32


class QueryEncoder(nn.Module):
    """`rgb_encoder`: RGB frame -> f16 (1024), f8 (512), f4 (256)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1, self.res2, self.layer2, self.layer3 = make_trunk(3)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, frame):
        x = self.maxpool(F.relu(self.bn1(self.conv1(frame))))
        f4 = self.res2(x)
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        return f16, f8, f4


class MemoryEncoder(nn.Module):
    """`mask_rgb_encoder`: RGB + own mask (+ other objects' mask) -> f16 (1024)."""

    def __init__(self, single_object):
        super().__init__()
        self.single_object = single_object
        self.conv1, self.bn1, self.layer1, self.layer2, self.layer3 = make_trunk(4 if single_object else 5)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, frame, mask, other_masks):
        channels = [frame, mask] if self.single_object else [frame, mask, other_masks]
        x = torch.cat(channels, 1)
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


class KeyValue(nn.Module):
    """3x3 projections of f16 into a 128-d key and a 512-d value."""

    def __init__(self, in_ch=1024, key_ch=128, value_ch=512):
        super().__init__()
        self.key_proj = nn.Conv2d(in_ch, key_ch, 3, padding=1)
        self.val_proj = nn.Conv2d(in_ch, value_ch, 3, padding=1)

    def forward(self, x):
        return self.key_proj(x), self.val_proj(x)


class QualityHead(nn.Module):
    """`score`: predicts the quality (IoU) of an object's mask from its memory feature."""

    INPUT_SIZE = 24

    def __init__(self, in_ch=1024, width=256):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.conv3 = nn.Conv2d(width, width, 3, padding=1)
        self.conv4 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        side = self.INPUT_SIZE // 2
        self.fc1 = nn.Linear(width * side * side, 1024)
        self.fc2 = nn.Linear(1024, 1)
        self.reset_parameters()

    def reset_parameters(self):
        """The published initialisation of a fresh head."""
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            nn.init.kaiming_normal_(conv.weight, mode='fan_out', nonlinearity='relu')
            nn.init.zeros_(conv.bias)
        for fc in (self.fc1, self.fc2):
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.zeros_(fc.bias)

    def forward(self, f16, activate=True):
        """Score per input; activate=False returns fc2's output before the final ReLU (training fits it).

        fp32 even under autocast: the memory gate compares these scores with a
        threshold, and the head is cheap (a 24x24 input).
        """
        with torch.autocast(f16.device.type, enabled=False):
            x = F.interpolate(at_least_fp32(f16), size=(self.INPUT_SIZE, self.INPUT_SIZE), mode='bilinear',
                              align_corners=False)
            for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
                x = F.relu(conv(x))
            x = self.fc2(F.relu(self.fc1(x.flatten(1)))).squeeze(1)
            return F.relu(x) if activate else x


class ASPPBranch(nn.Module):
    def __init__(self, in_ch, out_ch, kernel_size, dilation):
        super().__init__()
        padding = 0 if kernel_size == 1 else dilation
        self.atrous_conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x):
        return F.relu(self.bn(self.atrous_conv(x)))


class ASPP(nn.Module):
    """DeepLab-v3 atrous spatial pyramid pooling on the 1024-d read-out."""

    def __init__(self, in_ch=1024, branch_ch=256, out_ch=1024):
        super().__init__()
        self.aspp1 = ASPPBranch(in_ch, branch_ch, 1, 1)
        self.aspp2 = ASPPBranch(in_ch, branch_ch, 3, 6)
        self.aspp3 = ASPPBranch(in_ch, branch_ch, 3, 12)
        self.aspp4 = ASPPBranch(in_ch, branch_ch, 3, 18)
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_ch, branch_ch, 1, bias=False),
            nn.BatchNorm2d(branch_ch), nn.ReLU())
        self.conv1 = nn.Conv2d(branch_ch * 5, out_ch, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.dropout = nn.Dropout(0.1)
        self.reset_parameters()

    def reset_parameters(self):
        """The published initialisation: convolutions kaiming_normal_ (fan_in), BatchNorm 1 / 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        pooled = F.interpolate(self.global_avg_pool(x), size=x.shape[-2:], mode='bilinear', align_corners=True)
        x = torch.cat([self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x), pooled], 1)
        return self.dropout(F.relu(self.bn1(self.conv1(x))))


class ResBlock(nn.Module):
    def __init__(self, in_ch, out_ch=None):
        super().__init__()
        out_ch = out_ch or in_ch
        self.downsample = None if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)

    def forward(self, x):
        r = self.conv2(F.relu(self.conv1(F.relu(x))))
        if self.downsample is not None:
            x = self.downsample(x)
        return x + r


class UpsampleBlock(nn.Module):
    def __init__(self, skip_ch, up_ch, out_ch):
        super().__init__()
        self.skip_conv1 = nn.Conv2d(skip_ch, up_ch, 3, padding=1)
        self.skip_conv2 = ResBlock(up_ch, up_ch)
        self.out_conv = ResBlock(up_ch, out_ch)

    def forward(self, skip, up):
        x = self.skip_conv2(self.skip_conv1(skip))
        x = x + F.interpolate(up, scale_factor=2, mode='bilinear', align_corners=False)
        return self.out_conv(x)


class Decoder(nn.Module):
    """1/16 read-out + f8, f4 skips -> mask logit at full resolution."""

    def __init__(self):
        super().__init__()
        self.compress = ResBlock(1024, 512)
        self.up_16_8 = UpsampleBlock(512, 512, 256)
        self.up_8_4 = UpsampleBlock(256, 256, 256)
        self.pred = nn.Conv2d(256, 1, 3, padding=1)

    def forward(self, x, f8, f4):
        x = self.compress(x)
        x = self.up_16_8(f8, x)
        x = self.up_8_4(f4, x)
        x = self.pred(F.relu(x))
        return F.interpolate(x, scale_factor=4, mode='bilinear', align_corners=False)
