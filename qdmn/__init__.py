"""QDMN's public API: segment a video frame by frame from Python.

    from qdmn import load_network, Segmenter
    net = load_network('saves/s012.pth', device='cpu')
    seg = Segmenter(net, preset='davis')
    masks = [seg.step(rgb, labels=first if i == 0 else None) for i, rgb in enumerate(frames)]

See docs/api.md.
"""
from inference_memory_bank import PRESETS, Preset
from qdmn.network import Network, load_network
from qdmn.segmenter import InputError, Segmenter

__all__ = ['load_network', 'Network', 'Segmenter', 'InputError', 'PRESETS', 'Preset']
