"""QDMN: quality-aware dynamic memory network.

The module tree and parameter names follow the published checkpoint, so
`load_state_dict(..., strict=True)` of the released weights succeeds. The
methods are the pieces both inference engines and the trainer compose.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from model.memory_read import read_memory
from model.modules import ASPP, Decoder, KeyValue, MemoryEncoder, QualityHead, QueryEncoder
from util.tensor_util import at_least_fp32


class QDMN(nn.Module):
    def __init__(self, single_object=False):
        super().__init__()
        self.single_object = single_object
        self.rgb_encoder = QueryEncoder()
        self.mask_rgb_encoder = MemoryEncoder(single_object)
        self.kv_m_f16 = KeyValue()
        self.kv_q_f16 = KeyValue()
        self.concat_conv = nn.Conv2d(1024 + 1, 1, 3, padding=1)
        self.score = QualityHead()
        self.aspp = ASPP()
        self.decoder = Decoder()

    def encode_query(self, frame):
        """frame (B,3,H,W) normalised -> f16, f8, f4 of the query encoder."""
        return self.rgb_encoder(frame)

    def query_key_value(self, f16, prev_fg):
        """Gates f16 by the previous frame's foreground (B,1,H,W) -> gated f16, key, value."""
        fg = F.interpolate(prev_fg, size=f16.shape[-2:], mode='bilinear', align_corners=False)
        gated = f16 * torch.sigmoid(self.concat_conv(torch.cat([f16, fg], 1)))
        key, value = self.kv_q_f16(gated)
        return gated, key, value

    def encode_memory(self, frame, masks, other_masks=None, activate_score=True):
        """Memory key/value and quality score of each object's mask.

        frame (B,3,H,W) (B=1 is broadcast over the objects), masks (K,1,H,W);
        other_masks defaults to the sum of the other rows of `masks`.
        Returns key (K,128,1,h,w), value (K,512,1,h,w), score (K,)
        (before the head's final ReLU when activate_score is False).
        """
        if other_masks is None:
            other_masks = masks.sum(0, keepdim=True) - masks
        frame = frame.expand(masks.shape[0], -1, -1, -1)
        f16 = self.mask_rgb_encoder(frame, masks, other_masks)
        key, value = self.kv_m_f16(f16)
        return key.unsqueeze(2), value.unsqueeze(2), self.score(f16, activate_score)

    def segment(self, readout, f8, f4):
        """Read-out (B,1024,h,w) + query skips -> foreground probability (B,1,H,W), always fp32.

        Under fp16 autocast the logits are fp16, whose sigmoid rounds every logit above ~8.3
        to exactly 1.0: two confident objects would tie in the aggregation.
        """
        return torch.sigmoid(at_least_fp32(self.segment_logits(readout, f8, f4)))

    def segment_logits(self, readout, f8, f4):
        """f8, f4 of batch 1 serve all B read-outs: the decoder's skip convolutions then run once."""
        return self.decoder(self.aspp(readout), f8, f4)

    @staticmethod
    def read(mem_key, mem_value, query_key, query_value, top_k=None, km_sigma=None):
        return read_memory(mem_key, mem_value, query_key, query_value, top_k, km_sigma)
