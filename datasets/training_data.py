"""The training data of each stage, its frame-gap curriculum, and the distributed loader."""
import bisect
import math
import os
import random

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader
from torch.utils.data.distributed import DistributedSampler

from datasets.static_dataset import StaticDataset
from datasets.vos_dataset import VOSDataset
from util.errors import UserInputError


def parse_static_sets(spec):
    """'fss,BIG_small:5' -> [('fss', 1), ('BIG_small', 5)]."""
    sets = []
    for item in filter(None, (s.strip() for s in spec.split(','))):
        name, _, repeat = item.partition(':')
        if repeat and not repeat.isdigit():
            raise UserInputError(f'--static_sets: bad repeat count in {item!r} (use name:N)')
        sets.append((name, int(repeat or 1)))
    if not sets:
        raise UserInputError('--static_sets: no image set given')
    return sets


def require_dir(path, flag, alternative=''):
    if not os.path.isdir(path):
        raise UserInputError(f'{path}: data folder not found (set {flag}{alternative})')


def dataset_root(root, inner):
    """The published layout names the outer folder (data/DAVIS -> data/DAVIS/2017/trainval);
    a root that already is the inner folder is used as it is."""
    nested = os.path.join(root, inner)
    return nested if os.path.isdir(nested) else root


def static_data(para):
    require_dir(para.static_root, '--static_root')
    parts = []
    for name, repeat in parse_static_sets(para.static_sets):
        folder = os.path.join(para.static_root, name)
        if not os.path.isdir(folder):
            raise UserInputError(f'{folder}: static image set not found (choose the sets with --static_sets)')
        parts += [StaticDataset(folder, para.size)] * repeat
    return ConcatDataset(parts)


class SkipCurriculum:
    """Max frame gap of each video dataset, stepping up and down over the run's epochs.

    Phase i starts at epoch round(fractions[i] * total_epochs), as published;
    before the first phase every dataset uses `initial`.
    """

    def __init__(self, fractions, initial, total_epochs):
        self.starts = [round(f * total_epochs) for f in fractions]
        self.initial = initial
        self.schedules = []   # (dataset, skips per phase)

    def add(self, dataset, skips):
        self.schedules.append((dataset, skips))

    def phase(self, epoch):
        return bisect.bisect_right(self.starts, epoch) - 1   # -1 before the first phase

    def apply(self, epoch):
        """Sets every dataset's max skip for `epoch`; returns {root: effective skip} for the log."""
        phase = self.phase(epoch)
        for dataset, skips in self.schedules:
            dataset.max_skip = self.initial if phase < 0 else skips[phase]
        return {d.root: d.effective_skip for d, _ in self.schedules}


def video_data(para):
    """Stage 1 (BL30K) or 2 (DAVIS x5 + YouTube-VOS) datasets, and (dataset, skips) pairs for the curriculum."""
    if para.stage == 1:
        require_dir(para.bl30k_root, '--bl30k_root')
        bl30k = VOSDataset(para.bl30k_root, para.size, crop_scale=(0.25, 1.0), drop_small_objects=True)
        return [bl30k], [(bl30k, para.bl30k_skips)]
    parts, schedules = [], []
    if para.davis_repeat > 0:
        require_dir(para.davis_root, '--davis_root', ', or --davis_repeat 0 to train without DAVIS')
        davis = VOSDataset(dataset_root(para.davis_root, os.path.join('2017', 'trainval')), para.size,
                           subset=para.davis_subset)
        parts += [davis] * para.davis_repeat
        schedules.append((davis, para.davis_skips))
    if para.yv_repeat > 0:
        require_dir(para.yv_root, '--yv_root', ', or --yv_repeat 0 to train without YouTube-VOS')
        youtube = VOSDataset(dataset_root(para.yv_root, 'train_480p'), para.size, skip_divisor=5,
                             subset=para.yv_subset)
        parts += [youtube] * para.yv_repeat
        schedules.append((youtube, para.yv_skips))
    if not parts:
        raise UserInputError('stage 2 needs data: --davis_repeat and --yv_repeat are both 0')
    return parts, schedules


class ResumableSampler(DistributedSampler):
    """A DistributedSampler whose epoch can start past its first `skip` samples (a run resumed mid-epoch)."""
    skip = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self):
        return super().__len__() - self.skip


class TrainingData:
    """Dataset, loader and curriculum of one stage, for one process of the distributed run.

    data_seed: the augmentation streams' seed (model.resume.data_seed: a resumed run draws new ones);
    the order of the samples follows --seed, so a resumed epoch continues the same permutation.
    """

    def __init__(self, para, rank, world_size, data_seed=None):
        self.para = para
        if para.stage == 0:
            self.dataset, schedules = static_data(para), []
        else:
            parts, schedules = video_data(para)
            self.dataset = ConcatDataset(parts)
        # Every rank shuffles with the same seed (so they split one permutation) ...
        self.sampler = ResumableSampler(self.dataset, world_size, rank, shuffle=True, seed=para.seed, drop_last=True)
        # ... while augmentation randomness differs per rank and per worker.
        seed = para.seed if data_seed is None else data_seed
        self.generator = torch.Generator().manual_seed(seed + 1000003 * (rank + 1))
        self.iterations_per_epoch = len(self.sampler) // para.batch_size
        if self.iterations_per_epoch == 0:
            raise UserInputError(f'{len(self.dataset)} training samples cannot fill one batch of {para.batch_size} '
                                 f'on each of {world_size} processes (lower --batch_size)')
        self.total_epochs = math.ceil(para.iterations / self.iterations_per_epoch)
        self.curriculum = SkipCurriculum(para.skip_fractions, para.initial_skip, self.total_epochs)
        for dataset, skips in schedules:
            self.curriculum.add(dataset, skips)
        self.loader, self.skips = None, None

    def make_loader(self):
        # Persistent workers keep their copy of the datasets, so a new max skip needs new workers.
        workers = self.para.num_workers
        # pinned (page-locked) batches only for a CUDA --device: they copy to the GPU without waiting
        return DataLoader(self.dataset, self.para.batch_size, sampler=self.sampler, num_workers=workers,
                          worker_init_fn=seed_worker, generator=self.generator, drop_last=True,
                          persistent_workers=workers > 0, pin_memory=torch.device(self.para.device).type == 'cuda')

    def epoch(self, epoch, first_batch=0):
        """Prepares `epoch` from its batch `first_batch` on (shuffle and curriculum): returns its loader and
        the skips if they changed."""
        self.sampler.set_epoch(epoch)
        self.sampler.skip = first_batch * self.para.batch_size
        skips = self.curriculum.apply(epoch)
        changed = skips != self.skips
        if changed or self.loader is None:
            self.loader, self.skips = self.make_loader(), skips
        return self.loader, skips if changed else None


def seed_worker(worker_id):
    """torch already seeds each worker from the loader's per-rank generator; numpy and random follow it."""
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)
