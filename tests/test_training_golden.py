"""One published training step (golden/train_step.npz): forward, losses, scores, targets, gradients."""
import numpy as np
import pytest
import torch

from model.losses import BootstrappedCE, quality_target
from model.model import TwoStepPropagation, training_loss
from model.network import QDMN
from util.tensor_util import IMAGENET_MEAN, IMAGENET_STD

from conftest import GOLDEN


@pytest.fixture(scope='module')
def golden():
    return dict(np.load(GOLDEN / 'train_step.npz'))


@pytest.fixture(scope='module')
def batch(golden):
    rgb = torch.from_numpy(golden['rgb_uint8']).permute(0, 1, 4, 2, 3).float() / 255
    rgb = (rgb - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return {
        'rgb': rgb,
        'masks': torch.stack([torch.from_numpy(golden['gt']), torch.from_numpy(golden['sec_gt'])], 2),
        'cls_gt': torch.from_numpy(golden['cls_gt']).long(),
        'selector': torch.from_numpy(golden['selector']),
    }


@pytest.fixture(scope='module')
def step(synthetic_state_dict, batch):
    """Forward of the published step; the network in eval mode, as in training."""
    torch.manual_seed(0)
    net = QDMN().eval()
    net.load_state_dict(synthetic_state_dict, strict=True)
    return net, TwoStepPropagation(net)(batch['rgb'], batch['masks'], batch['selector'])


def test_scores_targets_and_masks(golden, batch, step):
    _, out = step
    for i in (1, 2):
        score = out['score'][i - 1].detach()
        np.testing.assert_allclose(score.numpy(), golden['scores_raw'][:, i - 1], rtol=1e-3)
        np.testing.assert_allclose(score.mean(1, keepdim=True).numpy(), golden[f'mask_score_{i}'], rtol=1e-3)
        target = quality_target(out['prob'][i - 1], batch['masks'][:, i])
        np.testing.assert_allclose(target.unsqueeze(1).numpy(), golden[f'gt_score_{i}'], rtol=1e-3)
        prob = out['prob'][i - 1].detach()
        for slot, name in ((0, f'mask_{i}'), (1, f'sec_mask_{i}')):
            agreement = ((prob[:, slot] > 0.5).numpy() == golden[name].astype(bool)).mean()
            assert agreement >= 0.99, (name, agreement)


@pytest.mark.parametrize('it', [0, 45000])
def test_losses(golden, batch, step, it):
    _, out = step
    ce = BootstrappedCE(20000, 70000, 0.15)
    _, stats = training_loss(out, batch, it, ce, quality_weight=1.0)
    assert ce.fraction(it) == pytest.approx(float(golden[f'it{it}_p']))
    for i in (1, 2):
        loss_i = float(stats[f'ce_{i}'] + stats[f'quality_{i}'])
        assert loss_i == pytest.approx(float(golden[f'it{it}_loss_{i}']), rel=1e-3)
    assert float(stats['loss']) == pytest.approx(float(golden[f'it{it}_total_loss']), rel=1e-3)


def backward_45000(net, batch, out=None):
    if out is None:
        out = TwoStepPropagation(net)(batch['rgb'], batch['masks'], batch['selector'])
    loss, _ = training_loss(out, batch, 45000, BootstrappedCE(20000, 70000, 0.15), quality_weight=1.0)
    net.zero_grad()
    loss.backward()
    return dict(net.named_parameters())


def recorded_parameters(golden):
    names = [k[len('grad_norm/'):] for k in golden if k.startswith('grad_norm/')]
    assert len(names) == 10
    return names


def test_gradient_norms(golden, batch, step):
    """fp32, as trained: every recorded gradient norm within 1 %."""
    net, out = step
    params = backward_45000(net, batch, out)
    for name in recorded_parameters(golden):
        assert float(params[name].grad.norm()) == pytest.approx(float(golden[f'grad_norm/{name}']), rel=0.01), name


def test_gradient_values(golden, batch, synthetic_state_dict):
    """Element-wise gradients, computed in float64.

    In fp32 oneDNN's weight-gradient reductions round differently from the
    reference run: a handful of the quality head's conv1 values then differ
    by up to 0.3 % of the largest one. In float64 every recorded value agrees
    (to ~1e-6 of the maximum; 7e-4 for the memory encoder's first conv, whose
    gradient sums over the most pixels), so the check tests the maths, not the rounding.
    """
    net = QDMN().eval()
    net.load_state_dict(synthetic_state_dict, strict=True)
    net.double()
    batch64 = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    params = backward_45000(net, batch64)
    for name in recorded_parameters(golden):
        head = golden[f'grad_head/{name}']
        mine = params[name].grad.flatten()[:head.size].numpy()
        np.testing.assert_allclose(mine, head, rtol=1e-2, atol=1e-3 * np.abs(head).max(), err_msg=name)
        recorded_sum = float(golden[f'grad_sum/{name}'])
        assert float(params[name].grad.sum()) == pytest.approx(recorded_sum, rel=1e-2, abs=1e-3), name
