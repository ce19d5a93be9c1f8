"""Network contract: strict load of the published key set, module outputs equal the golden tensors."""
import json
import pickle

import numpy as np
import pytest
import torch

from inference_core import InferenceCore
from model.aggregate import aggregate
from model.checkpoint import build_network, read_state_dict
from model.network import QDMN
from util.errors import UserInputError


def test_state_dict_equals_manifest(shared_dir):
    manifest = json.loads((shared_dir / 'reference' / 'manifest.json').read_text())
    sd = QDMN().state_dict()
    assert set(sd) == set(manifest)
    for name, spec in manifest.items():
        assert list(sd[name].shape) == spec['shape'], name
        assert str(sd[name].dtype).replace('torch.', '') == spec['dtype'], name


def test_strict_load_of_the_synthetic_checkpoint(synthetic_checkpoint, synthetic_state_dict):
    net = build_network(str(synthetic_checkpoint))
    assert not net.single_object and not net.training
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, synthetic_state_dict[name]), name


def test_training_checkpoint_and_ddp_prefix_are_accepted(synthetic_state_dict, tmp_path):
    path = tmp_path / 'ckpt.pth'
    torch.save({'it': 10, 'network': {'module.' + k: v for k, v in synthetic_state_dict.items()}}, path)
    assert set(read_state_dict(str(path))) == set(synthetic_state_dict)


def test_single_object_checkpoint_builds_the_4_channel_network(tmp_path):
    path = tmp_path / 's0.pth'
    torch.save(QDMN(single_object=True).state_dict(), path)
    net = build_network(str(path))
    assert net.single_object and net.mask_rgb_encoder.conv1.in_channels == 4


@pytest.mark.parametrize('corrupt, expected', [
    (lambda sd: sd.pop('score.fc2.bias'), 'missing 1: score.fc2.bias'),
    (lambda sd: sd.update({'extra.weight': torch.zeros(1)}), 'unexpected 1: extra.weight'),
    (lambda sd: sd.update({'decoder.pred.weight': torch.zeros(1, 128, 3, 3)}),
     'mis-shaped 1: decoder.pred.weight (1, 128, 3, 3) vs (1, 256, 3, 3)'),
])
def test_wrong_architecture_lists_the_offending_tensors(synthetic_state_dict, tmp_path, corrupt, expected):
    sd = dict(synthetic_state_dict)
    corrupt(sd)
    path = tmp_path / 'bad.pth'
    torch.save(sd, path)
    with pytest.raises(UserInputError, match='does not match the QDMN architecture') as err:
        build_network(str(path))
    assert expected in str(err.value) and str(path) in str(err.value)


def test_missing_corrupt_and_pickled_code_checkpoints_are_refused(tmp_path):
    with pytest.raises(UserInputError, match='checkpoint not found'):
        build_network(str(tmp_path / 'nope.pth'))
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint')
    with pytest.raises(UserInputError, match='not a PyTorch checkpoint'):
        build_network(str(garbage))
    evil = tmp_path / 'evil.pth'
    with open(evil, 'wb') as f:
        pickle.dump({'network': {}, 'hook': print}, f)   # arbitrary callable: weights_only must refuse
    with pytest.raises(UserInputError, match='not a PyTorch checkpoint'):
        build_network(str(evil))


def test_building_for_inference_fetches_nothing(monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError('inference must not download ImageNet weights')
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', no_download)
    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_download)
    QDMN()


@pytest.fixture(scope='module')
def golden_modules(shared_dir):
    data = np.load(shared_dir / 'reference' / 'golden' / 'modules.npz')
    return {k: torch.from_numpy(data[k]) for k in data}


def assert_close(actual, golden):
    torch.testing.assert_close(actual.reshape(golden.shape), golden, rtol=1e-3, atol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize('layout', ['network', 'inference_net'])  # published modules; as the CLIs run it
def test_modules_equal_golden_tensors(request, golden_modules, layout):
    network = request.getfixturevalue(layout)
    g = golden_modules
    rgb, masks = g['padded_rgb'], g['padded_masks'].unsqueeze(1)
    key, value, score = network.encode_memory(rgb[0:1], aggregate(masks)[1:])
    assert_close(key, g['mem_key'])
    assert_close(value, g['mem_value'])
    assert_close(score, g['mem_score'])

    f16, f8, f4 = network.encode_query(rgb[1:2])
    prev_fg = aggregate(masks)[1:].max(0, keepdim=True)[0]
    gated, qk, qv = network.query_key_value(f16, prev_fg)
    assert_close(gated, g['query_f16_gated'])
    assert_close(qk, g['query_key'])
    assert_close(qv, g['query_value'])

    mk, mv = g['mem_key'], g['mem_value']
    readout = torch.cat([network.read(mk[i:i + 1], mv[i:i + 1], qk, qv, top_k=50) for i in range(2)])
    prob = network.segment(readout, f8, f4)
    assert_close(prob, g['fg_prob'])
    assert_close(aggregate(prob), g['aggregated'])


def test_inference_rewrites_fold_every_batchnorm_and_go_channels_last(inference_net):
    assert not [n for n, m in inference_net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    convs = [m for m in inference_net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    with torch.no_grad():
        f16, f8, f4 = inference_net.encode_query(torch.zeros(1, 3, 64, 64))
    assert f4.is_contiguous(memory_format=torch.channels_last)   # the layout reaches the activations


def test_padding_matches_golden(network, golden_modules):
    from util.tensor_util import pad_divide_by, unpad
    x = torch.zeros(1, 3, 240, 427)
    padded, pad = pad_divide_by(x)
    assert padded.shape[-2:] == (240, 432)
    assert list(pad) == golden_modules['pad'].tolist()
    assert unpad(padded, pad).shape == x.shape


@torch.no_grad()
def test_top_k_read_equals_dense_read_restricted_to_the_top_k():
    torch.manual_seed(0)
    mk, mv = torch.randn(1, 8, 3, 4, 5), torch.randn(1, 6, 3, 4, 5)
    qk, qv = torch.randn(1, 8, 4, 5), torch.randn(1, 6, 4, 5)
    full = QDMN.read(mk, mv, qk, qv, top_k=None)
    assert torch.allclose(QDMN.read(mk, mv, qk, qv, top_k=60), full, atol=1e-6)  # k >= T*H*W: dense
    sparse = QDMN.read(mk, mv, qk, qv, top_k=5)
    aff = mk[0].flatten(1).t() @ qk[0].flatten(1) / 8 ** 0.5
    top = aff.topk(5, dim=0)
    w = torch.zeros_like(aff).scatter_(0, top.indices, torch.softmax(top.values, 0))
    expected = (mv[0].flatten(1) @ w).view(1, 6, 4, 5)
    assert torch.allclose(sparse[:, :6], expected, atol=1e-5)
    assert torch.equal(sparse[:, 6:], qv)


def test_zero_first_frame_score_falls_back_to_absolute_quality(network):
    core = InferenceCore(network, top_k=10, mem_freq=1, quality_thr=0.5)
    with torch.no_grad():
        network.score.fc2.bias.fill_(-1e3)          # quality head now scores everything 0
    try:
        with pytest.warns(UserWarning, match='absolute'):
            core.start(torch.zeros(1, 3, 32, 32), torch.ones(1, 1, 32, 32))
        core.step(torch.zeros(1, 3, 32, 32))
    finally:
        with torch.no_grad():
            network.score.fc2.bias.fill_(1.0)
    assert core.reference is None and core.last_decision.reason == 'low_quality'
