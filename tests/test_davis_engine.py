"""The DAVIS engine reproduces the published implementation's masks and quality scores."""
import functools
import json

import numpy as np
import pytest
import torch

from inference_core import InferenceCore, propagate
from util.image_io import read_label_mask, read_rgb
from util.memory_log import MemoryLog
from util.tensor_util import frame_to_tensor, labels_to_masks


@functools.lru_cache(maxsize=None)   # blackswan takes a minute on CPU; tests/test_memory_log.py checks its log
def run_golden(network, golden_dir, clip, km_sigma=None, golden_file='golden.npz'):
    """Runs a golden clip with a memory log attached (so the golden results also hold with logging on)."""
    fixture = json.loads((golden_dir / 'fixture.json').read_text())
    golden = np.load(golden_dir / clip / golden_file)
    frames = sorted((golden_dir / clip / 'frames').glob('*.png'))[:fixture[clip]['frames']]
    labels, _ = read_label_mask(str(golden_dir / clip / 'masks' / '00000.png'))
    assert [int(o) for o in np.unique(labels) if o] == fixture[clip]['objects']
    core = InferenceCore(network, top_k=fixture['top_k'], mem_freq=fixture['mem_freq'],
                         memory_thr=fixture[clip]['memory_thr'], km_sigma=km_sigma,
                         memory_log=MemoryLog(fixture[clip]['objects']))
    tensors = (frame_to_tensor(read_rgb(str(p))) for p in frames)
    masks, scores = [], []
    for out in propagate(core, tensors, labels_to_masks(labels, fixture[clip]['objects'])):
        masks.append(out)
        if len(masks) < len(frames):          # the last frame is never encoded
            scores.append(core.last_scores.numpy())
    return np.stack(masks), np.stack(scores), golden, core


@pytest.mark.parametrize('layout', ['network', 'inference_net'])  # published modules; as the CLIs run it
@pytest.mark.parametrize('clip', ['bike', 'blackswan'])
def test_engine_reproduces_golden(request, shared_dir, clip, layout):
    network = request.getfixturevalue(layout)
    masks, scores, golden, core = run_golden(network, shared_dir / 'reference' / 'golden', clip)
    assert masks.shape == golden['masks'].shape
    agreement = (masks == golden['masks']).reshape(len(masks), -1).mean(1)
    assert agreement.min() >= 0.99, agreement
    np.testing.assert_allclose(scores, golden['scores'], rtol=1e-3)
    if clip == 'blackswan':
        # every 5th frame passed the gate; the previous frame is the temporary entry
        assert core.bank.frames() == [0, 5, 10, 15, 20, 25, 28]


def test_kernelized_read_reproduces_golden(inference_net, shared_dir):
    """--use_km (Gaussian sigma 5.6 before the top-k) on blackswan, against the published engine."""
    from model.memory_read import KM_SIGMA
    masks, scores, golden, _ = run_golden(inference_net, shared_dir / 'reference' / 'golden', 'blackswan',
                                          km_sigma=KM_SIGMA, golden_file='golden_km.npz')
    agreement = (masks == golden['masks']).reshape(len(masks), -1).mean(1)
    assert agreement.min() >= 0.99, agreement
    np.testing.assert_allclose(scores, golden['scores'], rtol=1e-3)
    plain = np.load(shared_dir / 'reference' / 'golden' / 'blackswan' / 'golden.npz')['masks']
    assert (masks != plain).any(), 'the kernel must change the result'


def test_memory_stays_bounded_on_a_long_video(network):
    """Many frames, every due frame stored: the bank saturates at its capacity."""
    capacity = 3
    core = InferenceCore(network, top_k=20, mem_freq=1, quality_thr=-1.0, memory_thr=capacity)
    g = torch.Generator().manual_seed(0)
    frames = (torch.randn(1, 3, 32, 48, generator=g) for _ in range(12))
    first = torch.zeros(1, 1, 32, 48)
    first[..., 8:24, 10:30] = 1
    outputs = list(propagate(core, frames, first))
    assert len(outputs) == 12 and outputs[0].shape == (32, 48)
    assert len(core.bank.permanent) == 1 and len(core.bank.stored) == capacity + 1
    assert core.decisions['replaced'] == 10 - (capacity + 1)
    assert core.bank.permanent[0].frame == 0
