"""Training pipeline: datasets, augmentations, losses, weight conversion, CLI errors, and real runs.

The end-to-end runs start train.py the way users do (torchrun with two gloo
processes, the legacy torch.distributed.launch, and a plain single process)
on tiny synthetic data written into tmp_path, at 64x64 crops.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.static_dataset import StaticDataset
from datasets.training_data import SkipCurriculum
from datasets.transforms import RandomThinPlateSpline, to_tensors
from datasets.vos_dataset import VOSDataset, sample_frame_indices
from model.checkpoint import build_network
from model.losses import BootstrappedCE, quality_loss, quality_target
from model.model import (TwoStepPropagation, imagenet_file, load_imagenet, load_start_network, read_checkpoint,
                         training_loss, widen_to_multi_object)
from model.network import QDMN
from util.errors import UserInputError, run_main
from util.palette import DAVIS_PALETTE

from conftest import SHARED

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / 'train.py')
LEARNING_ITERATIONS = 200
RUN_TIMEOUT = 600


# --- synthetic data -------------------------------------------------------------------------

def scene(rng, h, w, discs):
    """Noisy dark background with coloured discs (cy, cx, r, colour); returns rgb and label map 1..n."""
    rgb = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
    labels = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for k, (cy, cx, r, colour) in enumerate(discs, 1):
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        rgb[inside] = colour
        labels[inside] = k
    return rgb, labels


def write_palette_png(path, labels):
    img = Image.fromarray(labels, mode='P')
    img.putpalette(DAVIS_PALETTE.reshape(-1).tolist())
    img.save(path)


def write_static(root, nested, count=4, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(count):
        rgb, labels = scene(rng, 80, 100, [(40, 30 + 10 * i, 18, (200, 50, 50))])
        folder = Path(root) / (f'class{i % 2}' if nested else '')
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(folder / f'img{i}.jpg')
        Image.fromarray(labels * 255).save(folder / f'img{i}.png')  # grey 0/255, as DUTS/FSS


def write_vos(root, davis_layout, videos=3, frames=8, seed=0, objects=2, names=None):
    """Videos of two discs moving in opposite directions, palette annotations on every frame."""
    rng = np.random.default_rng(seed)
    sub = '480p' if davis_layout else ''
    for name in names or [f'video{v}' for v in range(videos)]:
        jpg_dir = Path(root) / 'JPEGImages' / sub / name
        png_dir = Path(root) / 'Annotations' / sub / name
        jpg_dir.mkdir(parents=True)
        png_dir.mkdir(parents=True)
        for t in range(frames):
            discs = [(30, 20 + 4 * t, 14, (220, 40, 40)), (48, 76 - 4 * t, 12, (40, 220, 40))][:objects]
            rgb, labels = scene(rng, 72, 96, discs)
            Image.fromarray(rgb).save(jpg_dir / f'{t:05d}.jpg')
            write_palette_png(png_dir / f'{t:05d}.png', labels)


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('training_data')
    write_static(root / 'static' / 'fss', nested=True)
    write_static(root / 'static' / 'ecssd', nested=False, seed=1)
    # The published data/ layout; two DAVIS train videos of the shipped subset and one val video.
    write_vos(root.joinpath(*DAVIS_TRAINVAL), davis_layout=True, names=['bear', 'boat', 'blackswan'])
    write_vos(root.joinpath(*YV_TRAIN), davis_layout=False, seed=1, names=YV_SUBSET_VIDEOS + ['video1'])
    write_vos(root / 'BL30K', davis_layout=False, seed=2)
    return root


DAVIS_TRAINVAL = ('data', 'DAVIS', '2017', 'trainval')
YV_TRAIN = ('data', 'YouTube', 'train_480p')
YV_SUBSET_VIDEOS = (REPO / 'datasets' / 'subsets' / 'yv_subset.txt').read_text().split()[:2]
# The 30 DAVIS-2017 validation videos: never training samples by default.
DAVIS_2017_VAL = ('bike-packing blackswan bmx-trees breakdance camel car-roundabout car-shadow cows dance-twirl dog '
                  'dogs-jump drift-chicane drift-straight goat gold-fish horsejump-high india judo kite-surf lab-coat '
                  'libby loading mbike-trick motocross-jump paragliding-launch parkour pigs scooter-black shooting '
                  'soapbox').split()


# --- datasets and augmentation --------------------------------------------------------------

def test_static_dataset_reads_both_layouts(data_root):
    nested = StaticDataset(str(data_root / 'static' / 'fss'), size=64)
    flat = StaticDataset(str(data_root / 'static' / 'ecssd'), size=64)
    assert len(nested) == len(flat) == 4
    torch.manual_seed(0)
    sample = nested[1]
    assert sample['rgb'].shape == (3, 3, 64, 64)
    assert sample['masks'].shape == (3, 1, 64, 64)
    assert set(sample['cls_gt'].unique().tolist()) <= {0, 1}
    assert sample['selector'].tolist() == [1.0]
    assert sample['masks'][0].sum() > 0, 'the first view must show the object'
    assert torch.equal(sample['masks'][:, 0].long(), sample['cls_gt'])


def test_static_dataset_bad_roots(tmp_path):
    with pytest.raises(UserInputError, match='not found'):
        StaticDataset(str(tmp_path / 'missing'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(UserInputError, match='no x.jpg'):
        StaticDataset(str(tmp_path / 'empty'))


def test_static_views_share_flip_and_zoom():
    """Published static augmentation: within a sample no mirrored pair, frame-to-frame scale within
    the per-frame affine's 0.9-1.1 (so at most 1.1/0.9 between two frames); across samples both
    flips and a range of zooms appear."""
    from datasets.transforms import StaticTransform
    torch.manual_seed(0)
    yy, xx = np.mgrid[:160, :160]
    disc = ((xx - 40) ** 2 + (yy - 80) ** 2 <= 12 ** 2).astype(np.uint8)   # left of centre
    rgb = np.stack([disc * 200 + 20] * 3, -1).astype(np.uint8)
    transform = StaticTransform(160)
    transform.tps.p = 0  # its local warps are not a change of scale; tested on its own below
    sides, sizes = set(), []
    for _ in range(60):
        images, masks = transform(*to_tensors(rgb, disc), 3)
        assert images.shape == (3, 3, 160, 160) and masks.shape == (3, 160, 160)
        areas = masks.flatten(1).sum(1).float()
        assert (areas > 0).all()
        cx = [float(torch.nonzero(m)[:, 1].float().mean()) for m in masks]
        side = {x < 80 for x in cx}
        assert len(side) == 1, cx          # never mirrored within a sample
        sides |= side
        scale = areas.sqrt()
        assert float(scale.max() / scale.min()) <= 1.1 / 0.9 * 1.03, areas   # 3 %: resampling
        sizes.append(float(scale.mean()))
    assert sides == {True, False}
    assert max(sizes) / min(sizes) > 1.4   # the shared zoom (0.8-1.5) varies across samples


def test_thin_plate_spline_warps_image_and_mask_alike():
    torch.manual_seed(3)
    rng = np.random.default_rng(0)
    _, labels = scene(rng, 96, 96, [(40, 50, 25, (255, 255, 255))])
    rgb = np.repeat(labels[..., None] * 255, 3, axis=2).astype(np.uint8)  # the image *is* the mask
    image, mask = to_tensors(rgb, labels)
    warped_image, warped_mask = RandomThinPlateSpline(p=1.0)(image, mask)
    from_image = warped_image[0] > 127
    assert (from_image == warped_mask.bool()).float().mean() > 0.99
    assert not torch.equal(warped_mask, mask), 'the warp should move some pixels'
    assert warped_mask.dtype == mask.dtype and set(warped_mask.unique().tolist()) <= {0, 1}


def test_frame_sampling_is_the_published_clamped_scheme():
    """Published QDMN sampler: each gap drawn from 1..max_skip (randint(1, jump + 1)), clamped to the video."""
    torch.manual_seed(0)
    reversed_count, gaps_seen = 0, set()
    for _ in range(3000):
        idx = sample_frame_indices(100, 4)
        if idx[0] > idx[-1]:
            reversed_count += 1
            idx = idx[::-1]
        gaps = np.diff(idx).tolist()
        gaps_seen |= set(gaps)
        assert 0 <= idx[0] <= 96 and idx[1] <= 96 and idx[2] <= 98
        assert all(0 <= g <= 4 for g in gaps), idx
        # a gap of 0 only where the clamp bites: the later frame sits at its limit
        if gaps[0] == 0:
            assert idx[1] == 96, idx
        if gaps[1] == 0:
            assert idx[2] == 98, idx
    assert 1300 < reversed_count < 1700
    assert {1, 2, 3, 4} <= gaps_seen <= {0, 1, 2, 3, 4}
    # max skip 1 (YouTube's first and last curriculum phases): consecutive frames
    for _ in range(200):
        idx = sorted(sample_frame_indices(30, 1))
        assert idx[2] - idx[0] <= 2 and np.diff(idx).max() <= 1
    # a 3-frame video with a large skip: the clamps pin the first two frames to 0, as published
    for _ in range(20):
        assert sorted(sample_frame_indices(3, 10))[:2] == [0, 0]


def test_bl30k_small_object_filter():
    from datasets.vos_dataset import large_enough
    frames = torch.zeros(3, 100, 100, dtype=torch.uint8)
    frames[0, :31, :31] = 1          # > 30x30 in the first frame: kept
    frames[0, 50:61, 50:61] = 2      # 11x11 and small later: kept
    frames[1, 50:61, 50:61] = 2
    frames[0, 80:91, 80:91] = 3      # 11x11 but large in frame 2: dropped
    frames[2, 60:100, 60:100] = 3
    frames[0, 0, 99] = 4             # tiny: dropped
    assert [o for o in (1, 2, 3, 4) if large_enough(frames, o)] == [1, 2]


def test_vos_dataset_two_objects(data_root):
    dataset = VOSDataset(str(data_root.joinpath(*DAVIS_TRAINVAL)), size=64, max_skip=3)
    assert len(dataset) == 3
    torch.manual_seed(0)
    for i in range(3):
        s = dataset[i]
        assert s['rgb'].shape == (3, 3, 64, 64) and s['masks'].shape == (3, 2, 64, 64)
        assert s['masks'][0, 0].sum() > 0, 'the target object must be in the first frame'
        expected = s['masks'][:, 0].long() + 2 * s['masks'][:, 1].long()
        assert torch.equal(s['cls_gt'], expected)
        assert s['selector'][0] == 1
        if s['selector'][1] == 0:
            assert s['masks'][:, 1].sum() == 0


def test_vos_dataset_reads_binary_davis_2016(shared_dir):
    dataset = VOSDataset(str(shared_dir / 'data' / 'DAVIS-2016-sample'), size=64)
    assert sorted(dataset.videos) == ['blackswan', 'car-shadow']
    torch.manual_seed(0)
    sample = dataset[0]
    assert sample['selector'].tolist() == [1.0, 0.0]   # one object, from 0/255 masks
    assert set(sample['cls_gt'].unique().tolist()) <= {0, 1}


def test_default_training_data_is_the_published_subsets(data_root, monkeypatch):
    """Defaults: roots under data/ as published, the shipped subsets, never a DAVIS-2017 val video."""
    from datasets.training_data import video_data
    from datasets.vos_dataset import read_subset
    from util.hyper_para import parse_args
    monkeypatch.chdir(data_root)
    para = parse_args(['--id', 'x', '--stage', '2', '--size', '64'])
    davis, youtube = video_data(para)[0][0], video_data(para)[0][-1]
    assert davis.videos == ['bear', 'boat'] and youtube.videos == sorted(YV_SUBSET_VIDEOS)
    shipped = read_subset(para.davis_subset)
    assert len(shipped) == 60 and not shipped & set(DAVIS_2017_VAL)
    assert len(read_subset(para.yv_subset)) == 3464

    para = parse_args(['--id', 'x', '--stage', '2', '--davis_subset', 'all', '--yv_subset', 'all',
                       '--davis_root', str(data_root.joinpath(*DAVIS_TRAINVAL))])   # the inner folder works too
    davis, youtube = video_data(para)[0][0], video_data(para)[0][-1]
    assert 'blackswan' in davis.videos and 'video1' in youtube.videos


def test_vos_dataset_subset_skip_divisor_and_errors(data_root, tmp_path):
    subset = tmp_path / 'subset.txt'
    subset.write_text('video1\nnot-there\n\n')
    youtube = VOSDataset(str(data_root.joinpath(*YV_TRAIN)), size=64, skip_divisor=5, subset=str(subset))
    assert youtube.videos == ['video1']
    youtube.max_skip = 10
    assert youtube.effective_skip == 2
    youtube.max_skip = 3
    assert youtube.effective_skip == 1

    subset.write_text('nothing-like-it\n')
    with pytest.raises(UserInputError, match='no video'):
        VOSDataset(str(data_root.joinpath(*YV_TRAIN)), subset=str(subset))
    with pytest.raises(UserInputError, match='JPEGImages'):
        VOSDataset(str(tmp_path))
    write_vos(tmp_path / 'blank', davis_layout=False, videos=1, frames=4, objects=0)
    blank = VOSDataset(str(tmp_path / 'blank'), size=32)
    with pytest.raises(UserInputError, match='no object'):
        blank[0]


def test_skip_curriculum_phases():
    class Fake:
        root, max_skip, skip_divisor = 'x', None, 1

        @property
        def effective_skip(self):
            return self.max_skip

    fake = Fake()
    curriculum = SkipCurriculum([0.1, 0.2, 0.3, 0.4, 0.7, 0.9], initial=5, total_epochs=100)
    curriculum.add(fake, [10, 15, 25, 10, 5, 1])
    expected = {0: 5, 9: 5, 10: 10, 19: 10, 20: 15, 35: 25, 40: 10, 70: 5, 89: 5, 90: 1, 99: 1}
    for epoch, skip in expected.items():
        assert curriculum.apply(epoch) == {'x': skip}, epoch


def test_augmentation_seeds_differ_across_ranks_and_workers(tmp_path):
    from datasets.training_data import TrainingData
    from util.hyper_para import parse_args
    write_static(tmp_path / 'one', nested=False, count=1)
    para = parse_args(['--id', 'x', '--stage', '0', '--static_root', str(tmp_path), '--static_sets', 'one:8',
                       '--batch_size', '1', '--num_workers', '2', '--size', '32'])

    def first_views(rank):
        loader, _ = TrainingData(para, rank, world_size=2).epoch(0)
        batches = iter(loader)
        return [next(batches)['rgb'] for _ in range(2)]  # batch i comes from worker i

    views = first_views(0) + first_views(1)              # one image, so only the augmentation differs
    for i in range(4):
        for j in range(i):
            assert not torch.equal(views[i], views[j]), (i, j)
    assert all(torch.equal(a, b) for a, b in zip(first_views(1), views[2:])), 'seeding must be reproducible'


# --- losses and forward ---------------------------------------------------------------------

def test_bootstrapped_ce_schedule_and_hard_pixels():
    ce = BootstrappedCE(20000, 70000, 0.15)
    assert ce.fraction(0) == ce.fraction(19999) == 1.0
    assert ce.fraction(45000) == pytest.approx(0.575)
    assert ce.fraction(70000) == ce.fraction(10 ** 6) == 0.15
    torch.manual_seed(0)
    logits, target = torch.randn(3, 8, 8), torch.randint(0, 3, (8, 8))
    loss, p = ce(logits, target, 100000)
    pixel = torch.nn.functional.cross_entropy(logits[None], target[None], reduction='none').flatten()
    assert p == 0.15
    assert loss.item() == pytest.approx(pixel.sort(descending=True)[0][:int(pixel.numel() * 0.15)].mean().item())
    assert ce(logits, target, 0)[0].item() == pytest.approx(pixel.mean().item())


def test_bootstrapped_ce_mines_each_sample_and_drops_absent_second_object():
    """Published rule: per-sample top-p, and (background, object 1) only when object 2 is absent."""
    torch.manual_seed(0)
    ce = BootstrappedCE(0, 1, 0.25)
    logits, target = torch.randn(2, 3, 8, 8), torch.randint(0, 2, (2, 8, 8))
    logits[0] *= 10  # sample 0 alone would fill a batch-wide top-p
    selector = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, _ = ce.batch(logits, target, selector, it=5)
    expected = (ce(logits[0], target[0], 5)[0] + ce(logits[1, :2], target[1], 5)[0]) / 2
    assert loss.item() == pytest.approx(expected.item())
    batch_wide, _ = ce(logits.transpose(0, 1).reshape(3, 16, 8), target.reshape(16, 8), 5)
    assert loss.item() != pytest.approx(batch_wide.item())


def test_quality_target_is_slot_mean_with_empty_union_zero():
    pred = torch.tensor([[[[0.9, 0.2]], [[0.0, 0.0]]], [[[0.9, 0.9]], [[0.9, 0.0]]]])   # (B=2, K=2, 1, 2)
    gt = torch.tensor([[[[1.0, 1.0]], [[0.0, 0.0]]], [[[1.0, 1.0]], [[1.0, 0.0]]]])
    # sample 0: IoU 0.5 and an absent second object (empty union: 0); sample 1: both perfect
    assert quality_target(pred, gt).tolist() == [0.25, 1.0]
    scores = torch.tensor([[0.5, 0.0], [1.0, 0.8]])
    # MSE of the slot-mean score per sample, summed over the batch and divided by its size
    expected = ((0.25 - 0.25) ** 2 + (0.9 - 1) ** 2) / 2
    assert quality_loss(scores, quality_target(pred, gt)).item() == pytest.approx(expected)


def test_two_step_forward_reaches_every_parameter():
    """Every parameter gets a gradient (DDP needs it) and the outputs have the documented shapes."""
    torch.manual_seed(0)
    net = QDMN()
    b, k, s = 1, 2, 32
    masks = torch.zeros(b, 3, k, s, s)
    masks[:, :, 0, 4:20, 4:20] = 1
    masks[:, :, 1, 20:30, 20:30] = 1
    data = {'rgb': torch.randn(b, 3, 3, s, s), 'masks': masks, 'selector': torch.ones(b, k),
            'cls_gt': (masks[:, :, 0] + 2 * masks[:, :, 1]).long()}
    out = TwoStepPropagation(net.eval())(data['rgb'], data['masks'], data['selector'])
    assert [x.shape for x in out['logits']] == [(b, k + 1, s, s)] * 2
    assert [x.shape for x in out['score']] == [(b, k)] * 2
    loss, stats = training_loss(out, data, 0, BootstrappedCE(), 1.0)
    loss.backward()
    assert [n for n, p in net.named_parameters() if p.grad is None] == []
    assert stats['union'] > 0 and 0 <= stats['intersection'] <= stats['union']


def test_quality_fit_modes_differ_where_the_score_is_dead():
    """Negative pre-activations: --quality_fit published (ReLU output, as published) scores 0, its
    quality loss is the mean squared target and no gradient passes the dead score: the quality head
    gets none and every other parameter gets exactly the cross-entropy's. preactivation fits the
    negative pre-activation: a larger loss and a gradient pushing the score up to the target."""
    torch.manual_seed(0)
    net = QDMN().eval()
    with torch.no_grad():
        net.score.fc2.bias.fill_(-3.0)
    b, k, s = 2, 2, 32
    masks = torch.zeros(b, 3, k, s, s)
    masks[:, :, 0, 4:20, 4:20] = 1
    masks[:, :, 1, 20:30, 20:30] = 1
    data = {'rgb': torch.randn(b, 3, 3, s, s), 'masks': masks, 'selector': torch.ones(b, k),
            'cls_gt': (masks[:, :, 0] + 2 * masks[:, :, 1]).long()}

    def step(activate_score, quality_weight=1.0):
        net.zero_grad()
        out = TwoStepPropagation(net, activate_score)(data['rgb'], data['masks'], data['selector'])
        loss, stats = training_loss(out, data, 0, BootstrappedCE(), quality_weight)
        loss.backward()
        return out, stats, {n: p.grad.clone() for n, p in net.named_parameters()}

    pre_out, pre_stats, pre_grads = step(activate_score=False)
    pub_out, pub_stats, pub_grads = step(activate_score=True)
    _, _, ce_grads = step(activate_score=True, quality_weight=0.0)
    for i in (1, 2):
        assert (pre_out['score'][i - 1] < 0).all()                       # the premise: every score dead
        assert (pub_out['score'][i - 1] == 0).all()
        target = quality_target(pub_out['prob'][i - 1], data['masks'][:, i])
        assert float(pub_stats[f'quality_{i}']) == pytest.approx(float((target ** 2).mean()))
        assert float(pre_stats[f'quality_{i}']) > float(pub_stats[f'quality_{i}'])
        assert float(pre_stats[f'ce_{i}']) == pytest.approx(float(pub_stats[f'ce_{i}']))
    head = [n for n in pub_grads if n.startswith('score.')]
    assert all(not pub_grads[n].any() for n in head)
    assert all(torch.equal(pub_grads[n], ce_grads[n]) for n in pub_grads if n not in head)
    assert all(pre_grads[n].any() for n in head)
    assert float(pre_grads['score.fc2.bias']) < 0                         # descent raises the score
    assert not torch.equal(pre_grads['mask_rgb_encoder.conv1.weight'], ce_grads['mask_rgb_encoder.conv1.weight'])


# --- starting weights -----------------------------------------------------------------------

def test_single_object_weights_widen_to_two_objects(tmp_path):
    torch.manual_seed(0)
    single = QDMN(single_object=True).state_dict()
    widened = widen_to_multi_object(single)
    conv1 = widened['mask_rgb_encoder.conv1.weight']
    assert conv1.shape == (64, 5, 7, 7)
    assert torch.equal(conv1[:, :4], single['mask_rgb_encoder.conv1.weight'])
    extra = conv1[:, 4].reshape(64, -1)
    assert torch.allclose(extra.T @ extra, torch.eye(49), atol=1e-5)  # orthogonal columns

    path = tmp_path / 'single.pth'
    torch.save(single, path)
    multi = QDMN()
    load_start_network(multi, str(path))
    assert torch.equal(multi.state_dict()['score.fc1.weight'], single['score.fc1.weight'])

    torch.save(QDMN().state_dict(), path)
    with pytest.raises(UserInputError, match='two-object network'):
        load_start_network(QDMN(single_object=True), str(path))


def test_imagenet_weights_from_cache_or_flag(tmp_path, monkeypatch):
    import torchvision
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))
    with pytest.raises(UserInputError, match=re.escape(str(tmp_path / 'hub' / 'checkpoints'))):
        imagenet_file(None)
    with pytest.raises(UserInputError, match='--imagenet'):
        imagenet_file(str(tmp_path / 'nope.pth'))
    cached = tmp_path / 'hub' / 'checkpoints' / 'resnet50-19c8e357.pth'
    cached.parent.mkdir(parents=True)
    source = torchvision.models.resnet50().state_dict()
    torch.save(source, cached)
    assert imagenet_file(None) == str(cached)

    net = QDMN(single_object=True)
    load_imagenet(net, str(cached))
    assert torch.equal(net.rgb_encoder.res2[0].conv2.weight, source['layer1.0.conv2.weight'])
    assert torch.equal(net.mask_rgb_encoder.layer3[5].bn3.running_var, source['layer3.5.bn3.running_var'])
    assert torch.equal(net.mask_rgb_encoder.conv1.weight[:, :3], source['conv1.weight'])

    torch.save({'conv1.weight': torch.zeros(3)}, cached)
    with pytest.raises(UserInputError, match='ResNet-50'):
        load_imagenet(QDMN(single_object=True), str(cached))


def test_fresh_start_has_the_published_initialisation(tmp_path):
    """Trunks compute exactly ImageNet features (zero conv biases), mask channels orthogonal,
    ASPP kaiming fan_in with BN 1/0, quality head kaiming fan_out / uniform(a=1), zero biases."""
    import torchvision
    torch.manual_seed(0)
    resnet = torchvision.models.resnet50().eval()
    path = tmp_path / 'imagenet.pth'
    torch.save(resnet.state_dict(), path)
    net = QDMN().eval()
    load_imagenet(net, str(path))

    conv_biases = [m.bias for trunk in (net.rgb_encoder, net.mask_rgb_encoder)
                   for m in trunk.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(conv_biases) == 2 * 43 and all(not b.any() for b in conv_biases)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = resnet.layer3(resnet.layer2(resnet.layer1(resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x)))))))
        assert torch.allclose(net.rgb_encoder(x)[0], expected, atol=1e-5)
        assert torch.allclose(net.mask_rgb_encoder(x, torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 64, 64)),
                              expected, atol=1e-5)
    extra = net.mask_rgb_encoder.conv1.weight[:, 3:].detach().reshape(64, 2 * 49)
    assert torch.allclose(extra @ extra.T, torch.eye(64), atol=1e-5)  # orthogonal rows (64 < 98)

    def std_ok(weight, expected_std):
        return abs(weight.std().item() / expected_std - 1) < 0.05

    aspp_convs = [m for m in net.aspp.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(aspp_convs) == 6
    for conv in aspp_convs:
        fan_in = conv.weight[0].numel()
        assert std_ok(conv.weight, (2 / fan_in) ** 0.5)
    for bn in (m for m in net.aspp.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and not bn.bias.any()
    head = net.score
    for conv in (head.conv1, head.conv2, head.conv3, head.conv4):
        fan_out = conv.weight.shape[0] * conv.weight[0, 0].numel()
        assert std_ok(conv.weight, (2 / fan_out) ** 0.5) and not conv.bias.any()
    for fc in (head.fc1, head.fc2):
        bound = (3 / fc.in_features) ** 0.5  # kaiming_uniform_(a=1): gain 1
        assert fc.weight.abs().max() <= bound and fc.weight.abs().max() > 0.9 * bound and not fc.bias.any()


def test_git_state_tolerates_missing_repository(tmp_path):
    from util.logger import git_state
    assert re.fullmatch(r'[0-9a-f]{40} \((clean|dirty)\)', git_state(str(REPO))) or git_state(str(REPO)).startswith(
        'unknown')
    assert git_state(str(tmp_path)).startswith('unknown (')


# --- command line: bad input ----------------------------------------------------------------

def run_train_inprocess(argv, monkeypatch, capsys):
    """Runs train.py's entry point in this process; returns (exit code, stderr)."""
    import train
    monkeypatch.setattr(sys, 'argv', ['train.py'] + [str(a) for a in argv])
    for name in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK'):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as exit_info:
                run_main(train.main)
    return exit_info.value.code, capsys.readouterr().err


def test_cli_rejects_bad_input(data_root, tmp_path, monkeypatch, capsys):
    common = ['--saves_root', tmp_path / 'saves', '--device', 'cpu', '--size', 64, '--num_workers', 0,
              '--batch_size', 2]
    static = ['--static_root', data_root / 'static', '--static_sets', 'fss,ecssd']

    code, err = run_train_inprocess(['--id', 'a', '--stage', 0, '--static_root', tmp_path / 'nope'] + common,
                                    monkeypatch, capsys)
    assert code == 2 and 'nope: data folder not found (set --static_root)' in err

    code, err = run_train_inprocess(['--id', 'a', '--stage', 0, '--static_root', data_root / 'static',
                                     '--static_sets', 'fss,DUTS-TR'] + common, monkeypatch, capsys)
    assert code == 2 and 'DUTS-TR: static image set not found' in err

    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))
    code, err = run_train_inprocess(['--id', 'a', '--stage', 0] + static + common, monkeypatch, capsys)
    assert code == 2 and 'no ImageNet ResNet-50 weights' in err and '--imagenet' in err

    (tmp_path / 'saves' / 'taken').mkdir(parents=True)
    code, err = run_train_inprocess(['--id', 'taken', '--stage', 0, '--no_imagenet'] + static + common,
                                    monkeypatch, capsys)
    assert code == 2 and 'a run with --id taken exists' in err and '--resume' in err

    fake = tmp_path / 'fake_checkpoint.pth'
    torch.save({'it': 5, 'stage': 0, 'network': {}, 'optimizer': {}, 'scheduler': {}}, fake)
    code, err = run_train_inprocess(['--id', 'b', '--stage', 2, '--load_model', fake,
                                     '--davis_root', data_root.joinpath(*DAVIS_TRAINVAL),
                                     '--yv_root', data_root.joinpath(*YV_TRAIN)] + common,
                                    monkeypatch, capsys)
    assert code == 2 and 'checkpoint of stage 0, cannot resume it as stage 2' in err

    torch.save({'not': torch.zeros(1)}, fake)
    code, err = run_train_inprocess(['--id', 'c', '--stage', 0, '--load_network', fake] + static + common,
                                    monkeypatch, capsys)
    assert code == 2 and 'does not match the QDMN architecture' in err

    code, _ = run_train_inprocess(['--id', 'd', '--stage', 0, '--size', 50] + static, monkeypatch, capsys)
    assert code == 2  # argparse: --size must be a multiple of 16


# --- real runs: torchrun, the legacy launcher, one process ----------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run(cmd, cwd):
    # One thread per process unless told otherwise (torchrun does the same): on a busy
    # 2-core machine, two spinning threads per process slow training down several times.
    env = {'OMP_NUM_THREADS': '1', **os.environ, 'PYTHONUNBUFFERED': '1'}
    for name in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
        env.pop(name, None)
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=RUN_TIMEOUT)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    return log


def torchrun(port):
    return [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={port}', TRAIN]


def reported(log):
    """(iteration, {scalar: value}) of every progress line."""
    rows = []
    for line in log.splitlines():
        m = re.match(r'it (\d+)/\d+ (.*?) \|', line)
        if m:
            values = m.group(2).split()
            rows.append((int(m.group(1)), {k: float(v) for k, v in zip(values[::2], values[1::2])}))
    return rows


TINY = ['--size', 64, '--batch_size', 1, '--num_workers', 1, '--log_every', 1, '--image_every', 1,
        '--device', 'cpu']


@pytest.fixture(scope='module')
def runs(data_root, tmp_path_factory):
    """Stage 0 on two processes (torchrun), stage 2 from its weights with the published legacy-launcher
    command line and data/ layout, then a resume with torchrun."""
    work = tmp_path_factory.mktemp('runs')
    (work / 'data').symlink_to(data_root / 'data')
    saves = work / 'saves'
    tiny = ['--size', 64, '--num_workers', 1, '--log_every', 1, '--image_every', 1, '--device', 'cpu']
    logs = {}
    logs['s0'] = run(torchrun(free_port()) + [
        '--id', 's0', '--stage', 0, '--iterations', 2, '--batch_size', 1, '--save_every', 2, '--no_imagenet',
        '--static_root', data_root / 'static', '--static_sets', 'fss,ecssd:2', '--saves_root', saves] + tiny, work)
    # Published: python -m torch.distributed.launch --master_port 12345 --nproc_per_node=2 train.py
    #            --id s03-QDMN --stage 2 --load_network saves/s0-QDMN/x.pth   (+ -i 2 -b 1, tiny crops)
    logs['s03'] = run([sys.executable, '-m', 'torch.distributed.launch', '--master_port', free_port(),
                       '--nproc_per_node=2', TRAIN, '--id', 's03', '--stage', 2,
                       '--load_network', 'saves/s0/s0_2.pth', '-i', 2, '-b', 1] + tiny, work)
    shutil.copy(saves / 's03' / 's03_checkpoint.pth', work / 's03_checkpoint_at_2.pth')
    logs['resume'] = run(torchrun(free_port()) + [
        '--id', 's03', '--stage', 2, '--iterations', 3, '--batch_size', 1, '--save_every', 100,
        '--load_model', saves / 's03' / 's03_checkpoint.pth'] + tiny, work)
    yield work, logs
    shutil.rmtree(work, ignore_errors=True)  # ~4 GB of checkpoints


def test_two_process_stage0_run_saves_network_and_checkpoint(runs):
    work, logs = runs
    folder = work / 'saves' / 's0'
    assert '2 process(es) on cpu (gloo)' in logs['s0']
    assert [it for it, _ in reported(logs['s0'])] == [1, 2]
    assert (folder / 's0_2.pth').is_file() and (folder / 's0_checkpoint.pth').is_file()
    assert not list(folder.glob('*.tmp*')), 'temporary files must be renamed away'
    assert (folder / 'config.json').is_file() and list(folder.glob('events.out.tfevents.*'))
    single = build_network(str(folder / 's0_2.pth'))
    assert single.single_object
    checkpoint = read_checkpoint(str(folder / 's0_checkpoint.pth'), stage=0)
    assert checkpoint['it'] == 2


def test_stage2_starts_from_stage0_weights(runs):
    work, logs = runs
    assert 'network weights from saves/s0/s0_2.pth' in logs['s03']
    assert '2 process(es) on cpu (gloo)' in logs['s03']
    s0 = torch.load(work / 'saves' / 's0' / 's0_2.pth', weights_only=True)
    before = read_checkpoint(str(work / 's03_checkpoint_at_2.pth'), stage=2)
    assert before['network']['mask_rgb_encoder.conv1.weight'].shape == (64, 5, 7, 7)
    assert before['it'] == 2
    # Two Adam steps at lr 2e-5 move the weights only slightly away from stage 0's.
    delta = (before['network']['decoder.pred.weight'] - s0['decoder.pred.weight']).abs().max()
    assert 0 < delta < 1e-3


def test_resume_continues_with_identical_optimizer_state(runs):
    work, logs = runs
    assert 'resumed' in logs['resume'] and 'at iteration 2' in logs['resume']
    assert [it for it, _ in reported(logs['resume'])] == [3]
    saved = read_checkpoint(str(work / 's03_checkpoint_at_2.pth'), stage=2)

    # Loading restores the saved optimiser and scheduler state exactly ...
    from model.model import QDMNModel
    from util.hyper_para import parse_args
    para = parse_args(['--id', 'x', '--stage', '2'])
    model = QDMNModel(QDMN(), para, torch.device('cpu'))
    assert model.load_checkpoint(saved) == 2
    restored = model.optimizer.state_dict()
    for index, state in saved['optimizer']['state'].items():
        for key, value in state.items():
            assert torch.equal(restored['state'][index][key], value), (index, key)
    assert model.scheduler.state_dict() == saved['scheduler']
    del model

    # ... and the resumed run took exactly one more Adam step from it.
    final = read_checkpoint(str(work / 'saves' / 's03' / 's03_checkpoint.pth'), stage=2)
    assert final['it'] == 3 and final['scheduler']['last_epoch'] == 3
    assert all(float(s['step']) == 3 for s in final['optimizer']['state'].values())
    assert (work / 'saves' / 's03' / 's03_3.pth').is_file()


def test_trained_network_runs_in_inference_engine(runs):
    from inference_core import InferenceCore, propagate
    from util.tensor_util import frame_to_tensor, labels_to_masks
    work, _ = runs
    net = build_network(str(work / 'saves' / 's03' / 's03_3.pth'))
    assert not net.single_object
    rng = np.random.default_rng(0)
    clip = [scene(rng, 64, 96, [(30, 20 + 5 * t, 12, (220, 40, 40)), (45, 70 - 5 * t, 10, (40, 220, 40))])
            for t in range(4)]
    frames = (frame_to_tensor(rgb) for rgb, _ in clip)
    out = list(propagate(InferenceCore(net), frames, labels_to_masks(clip[0][1], [1, 2])))
    assert len(out) == 4 and all(o.shape == (64, 96) for o in out)
    assert set(np.unique(out[0])) == {0, 1, 2}


def test_single_process_stage1_without_launcher(data_root, tmp_path):
    log = run([sys.executable, TRAIN, '--id', 's1', '--stage', 1, '--iterations', 1, '--no_imagenet',
               '--bl30k_root', data_root / 'BL30K', '--saves_root', tmp_path / 'saves'] + TINY, tmp_path)
    assert '1 process(es) on cpu (gloo)' in log
    assert (tmp_path / 'saves' / 's1' / 's1_1.pth').is_file()
    assert read_checkpoint(str(tmp_path / 'saves' / 's1' / 's1_checkpoint.pth'), stage=1)['it'] == 1
    shutil.rmtree(tmp_path / 'saves')


def test_id_null_debug_and_bl_root(data_root, tmp_path):
    """Published switches: --id NULL trains without logging or saving, --debug reports every iteration."""
    log = run([sys.executable, TRAIN, '--id', 'NULL', '--stage', 1, '-i', 2, '--no_imagenet', '--debug',
               '--bl_root', data_root / 'BL30K', '--size', 64, '-b', 1, '--num_workers', 0, '--device', 'cpu',
               '--log_every', 50], tmp_path)
    assert [it for it, _ in reported(log)] == [1, 2]
    assert list(tmp_path.iterdir()) == []


# --- learning check ---------------------------------------------------------------------------

def learning_run(quality_fit, iterations, window=50, seed=0):
    """Stage-2 training in-process on the real DAVIS-2016 sample (blackswan, car-shadow; 32x32 crops,
    batch 4) from the synthetic weights with a freshly published-initialised quality head. lr 1e-4
    (5x the published 2e-5) so a few hundred CPU iterations show where a real run goes.
    Returns the report of every window."""
    sys.path.insert(0, str(SHARED / 'reference'))
    try:
        import weights
    finally:
        sys.path.pop(0)
    from torch.utils.data import ConcatDataset, DataLoader
    from model.model import QDMNModel
    from util.hyper_para import parse_args
    torch.manual_seed(seed)
    net = QDMN()
    net.load_state_dict(weights.deterministic_state_dict())
    net.score.reset_parameters()
    para = parse_args(['--id', 'learn', '--stage', '2', '--lr', '1e-4', '--quality_fit', quality_fit])
    model = QDMNModel(net, para, torch.device('cpu')).train()
    dataset = VOSDataset(str(SHARED / 'data' / 'DAVIS-2016-sample'), size=32, max_skip=5)
    loader = DataLoader(ConcatDataset([dataset] * 1000), 4, shuffle=True, drop_last=True)
    reports = []
    for it, batch in enumerate(loader):
        model.do_pass(batch, it)
        if (it + 1) % window == 0:
            reports.append(model.report())
        if it + 1 == iterations:
            return reports


@pytest.mark.slow
def test_quality_head_learns_by_default_and_dies_as_published():
    """Default (fit before the final ReLU): segmentation and quality head both learn, the score
    predicts the IoU (Pearson r >= 0.5 over the last window). --quality_fit published: every
    score is 0 within a few steps and stays there (the published "score stays 0" problem)."""
    published = learning_run('published', 20, window=10)
    print('\npublished:', [(round(r['zero_score_fraction'], 3), round(r['mean_score'], 4)) for r in published])
    assert published[-1]['zero_score_fraction'] == 1.0 and published[-1]['mean_score'] == 0.0

    reports = learning_run('preactivation', LEARNING_ITERATIONS)
    print('default: it, CE frame 1, IoU, r(score, IoU), |score - IoU|, zero scores')
    for i, r in enumerate(reports, start=1):
        print(f'  {50 * i:4d} {r["ce_1"]:.3f} {r["iou"]:.3f} {r["score_iou_r"]:.3f} {r["score_iou_abs_err"]:.3f} '
              f'{r["zero_score_fraction"]:.3f}')
    first, last = reports[0], reports[-1]
    assert last['ce_1'] < 0.5 * first['ce_1'] and last['iou'] > first['iou'] + 0.2
    assert last['zero_score_fraction'] < 0.5
    assert last['score_iou_r'] >= 0.5, [r['score_iou_r'] for r in reports]
