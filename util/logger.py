"""Training log: console lines with ETA, TensorBoard scalars and sample images, run provenance.

Only rank 0 writes; other ranks get a logger whose methods do nothing.
"""
import datetime
import json
import os
import time

import numpy as np
import torch

from util.overlay import blend
from util.tensor_util import IMAGENET_MEAN, IMAGENET_STD


def git_state(path=None):
    """'<commit> (clean|dirty)' of the repository holding the code, or why there is none."""
    try:
        import git
        repo = git.Repo(path or os.path.dirname(os.path.abspath(__file__)), search_parent_directories=True)
        return f'{repo.head.commit.hexsha} ({"dirty" if repo.is_dirty() else "clean"})'
    except Exception as e:  # not a repository, no commit yet, git missing: provenance is best-effort
        return f'unknown ({type(e).__name__})'


def format_seconds(seconds):
    return str(datetime.timedelta(seconds=int(seconds)))


class TrainLogger:
    def __init__(self, folder, enabled, total_its):
        """folder None: console only (--id NULL)."""
        self.enabled = enabled
        self.total_its = total_its
        self.writer = None
        self.last_time, self.last_it = time.time(), 0
        self.dead_head_warned = False
        self.quality_fit = None   # --quality_fit, known from log_config: the dead-head warning depends on it
        if enabled and folder is not None:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(folder)

    def print(self, *args):
        if self.enabled:
            print(*args, flush=True)

    def log_config(self, para):
        """Hyper-parameters and code version, to the console, TensorBoard and <folder>/config.json."""
        self.quality_fit = getattr(para, 'quality_fit', None)
        if not self.enabled:
            return
        config = {k: v for k, v in sorted(vars(para).items())}
        config['git'] = git_state()
        text = json.dumps(config, indent=1, default=str)
        self.print(f'git: {config["git"]}')
        self.print(f'hyper-parameters: {json.dumps({k: v for k, v in config.items() if k != "git"}, default=str)}')
        if self.writer is None:
            return
        self.writer.add_text('hyper-parameters', f'```\n{text}\n```')
        with open(os.path.join(self.writer.log_dir, 'config.json'), 'w') as f:
            f.write(text + '\n')

    def start(self, it):
        self.last_time, self.last_it = time.time(), it

    def report(self, it, scalars):
        """One console line with speed and ETA, and the scalars under train/ in TensorBoard."""
        if not self.enabled:
            return
        now = time.time()
        per_it = (now - self.last_time) / max(it - self.last_it, 1)
        self.last_time, self.last_it = now, it
        if self.writer is not None:
            for name, value in scalars.items():
                self.writer.add_scalar(f'train/{name}', value, it)
        values = ' '.join(f'{k} {v:.4g}' for k, v in scalars.items())
        self.print(f'it {it}/{self.total_its} {values} | {per_it:.2f} s/it, '
                   f'ETA {format_seconds(per_it * (self.total_its - it))}')
        if scalars.get('zero_score_fraction') == 1 and not self.dead_head_warned:
            self.dead_head_warned = True
            self.print(f'WARNING: the quality head scored every sample 0 in the window ending at iteration {it}: '
                       + self.zero_scores_meaning())

    def zero_scores_meaning(self):
        """What all-zero quality scores mean under this run's --quality_fit (docs/training.md, "The quality head")."""
        if self.quality_fit == 'preactivation':
            return ('its output before the final ReLU is negative everywhere; the loss is fitted there, so the '
                    'head still learns and should recover (if it persists, the memory gate sees only zeros)')
        return ('its final ReLU is dead and it no longer learns (docs/training.md, "The quality head"; '
                '--quality_fit preactivation avoids this)')

    def images(self, it, data, out, samples=2):
        """Frames with ground truth (top) and prediction (bottom) overlaid, for the first samples."""
        if self.writer is None:
            return
        grid = sample_grid(data, out, samples)
        self.writer.add_image('train/samples', grid, it, dataformats='HWC')

    def close(self):
        if self.writer is not None:
            self.writer.close()


def sample_grid(data, out, samples):
    """HxWx3 uint8: per sample a row of ground truths over a row of predictions (frame 0 is given)."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    rows = []
    for b in range(min(samples, data['rgb'].shape[0])):
        frames = ((data['rgb'][b].cpu() * std + mean).clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).numpy()
        gt = data['cls_gt'][b].cpu().numpy().astype(np.uint8)
        pred = [gt[0]] + [logits[b].argmax(0).cpu().numpy().astype(np.uint8) for logits in out['logits']]
        rows.append(np.concatenate([blend(f, g) for f, g in zip(frames, gt)], 1))
        rows.append(np.concatenate([blend(f, p) for f, p in zip(frames, pred)], 1))
    return np.concatenate(rows, 0)
