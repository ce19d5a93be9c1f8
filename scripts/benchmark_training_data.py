"""Throughput of the training data loaders, and how long a training iteration waits for its batch.

Run from the repository root:

    python scripts/benchmark_training_data.py                  # synthetic data in a temporary folder
    python scripts/benchmark_training_data.py --data data      # your data/ (static, BL30K, DAVIS, YouTube)
    python scripts/benchmark_training_data.py --device cuda    # the waiting share of a GPU training step

For each stage's loader (stage 0: static images, 1: BL30K layout, 2: DAVIS x5 + YouTube-VOS)
at the published settings (384x384 crops, batch 14 / 8 / 8, max skip 5) it prints samples/s
with 1 worker and with one worker per core, and the CPU time one sample costs a worker
(independent of how busy the machine is: a free core delivers 1/that samples/s). Then it
trains a few iterations of each stage (random weights, published batch, one worker per
core) and reports the share of each iteration spent waiting for the next batch.

Synthetic data: JPEG frames with a smooth background, texture and moving discs (about
150 KB at 854x480, twice a DAVIS frame: a conservative decode cost) and palette
annotations: static images at 640x480, BL30K frames at 768x512, DAVIS and YouTube-VOS
frames at 854x480.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from datasets.training_data import TrainingData  # noqa: E402
from model.model import QDMNModel  # noqa: E402
from model.network import QDMN  # noqa: E402
from util.device import resolve_device  # noqa: E402
from util.errors import run_main  # noqa: E402
from util.hyper_para import parse_args  # noqa: E402
from util.palette import DAVIS_PALETTE  # noqa: E402

STAGES = {0: 'static images', 1: 'BL30K layout', 2: 'DAVIS x5 + YouTube-VOS'}


# --- synthetic data ----------------------------------------------------------------------------

def picture(rng, h, w, discs):
    """A photo-like frame (smooth colours, texture) with discs (cy, cx, r); returns rgb and labels."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    base = np.stack([yy / h * 160 + 40, xx / w * 120 + 60, (yy + xx) / (h + w) * 100 + 80], -1)
    rgb = base + rng.normal(0, 12, (h, w, 3))
    labels = np.zeros((h, w), np.uint8)
    for k, (cy, cx, r) in enumerate(discs, 1):
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        rgb[inside] = rng.integers(0, 256, 3) + rng.normal(0, 8, (int(inside.sum()), 3))
        labels[inside] = k
    return rgb.clip(0, 255).astype(np.uint8), labels


def save_palette(path, labels):
    img = Image.fromarray(labels, mode='P')
    img.putpalette(DAVIS_PALETTE.reshape(-1).tolist())
    img.save(path)


def write_videos(root, size, videos, frames, rng, copies=32):
    """`videos` distinct videos, linked `copies` times in all so that an epoch holds many batches."""
    h, w = size
    for v in range(videos):
        for folder in ('JPEGImages', 'Annotations'):
            os.makedirs(os.path.join(root, folder, f'v{v}'), exist_ok=True)
        for t in range(frames):
            discs = [(h * 0.4, w * (0.2 + 0.02 * t), h * 0.15), (h * 0.6, w * (0.8 - 0.02 * t), h * 0.12)]
            rgb, labels = picture(rng, h, w, discs)
            Image.fromarray(rgb).save(os.path.join(root, 'JPEGImages', f'v{v}', f'{t:05d}.jpg'), quality=90)
            save_palette(os.path.join(root, 'Annotations', f'v{v}', f'{t:05d}.png'), labels)
    for v in range(videos, copies):
        for folder in ('JPEGImages', 'Annotations'):
            os.symlink(f'v{v % videos}', os.path.join(root, folder, f'v{v}'))


def write_synthetic(root, videos=4, frames=16, images=24):
    """data/ in the published layout under `root`."""
    rng = np.random.default_rng(0)
    static = os.path.join(root, 'static', 'set')
    os.makedirs(static)
    for i in range(images):
        rgb, labels = picture(rng, 480, 640, [(240, 320, 150)])
        Image.fromarray(rgb).save(os.path.join(static, f'{i}.jpg'), quality=90)
        Image.fromarray(labels * 255).save(os.path.join(static, f'{i}.png'))
    write_videos(os.path.join(root, 'BL30K'), (512, 768), videos, frames, rng)
    write_videos(os.path.join(root, 'DAVIS', '2017', 'trainval'), (480, 854), videos, frames, rng)
    write_videos(os.path.join(root, 'YouTube', 'train_480p'), (480, 854), videos, frames, rng)


def stage_args(stage, data, synthetic, workers, device):
    argv = ['--id', 'benchmark', '--stage', str(stage), '--num_workers', str(workers), '--device', device,
            '--static_root', os.path.join(data, 'static'), '--bl_root', os.path.join(data, 'BL30K'),
            '--davis_root', os.path.join(data, 'DAVIS'), '--yv_root', os.path.join(data, 'YouTube')]
    if synthetic:
        argv += ['--static_sets', 'set:10', '--davis_subset', 'all', '--yv_subset', 'all']
    return parse_args(argv)


# --- measurements --------------------------------------------------------------------------------

def endless(para):
    """The stage's batches, epoch after epoch, as train.py draws them."""
    data, epoch = TrainingData(para, rank=0, world_size=1), 0
    while True:
        yield from data.epoch(epoch)[0]
        epoch += 1


def loader_throughput(para, batches):
    """Samples/s of the stage's loader, after a first batch that pays for starting the workers."""
    iterator = endless(para)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * para.batch_size / (time.perf_counter() - start)


def cpu_seconds_per_sample(para, samples):
    """CPU time of one sample in this process (no workers, one thread): what a worker spends on it,
    however busy the machine is."""
    dataset = TrainingData(para, rank=0, world_size=1).dataset
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    try:
        dataset[0]
        start = time.process_time()
        for i in range(samples):
            dataset[(i * 7919) % len(dataset)]
        return (time.process_time() - start) / samples
    finally:
        torch.set_num_threads(threads)


def waiting_share(para, iterations, device):
    """Seconds per training iteration and the share spent waiting for its batch (after a first one)."""
    torch.manual_seed(0)
    model = QDMNModel(QDMN(single_object=para.stage == 0), para, device).train()
    iterator = endless(para)
    model.do_pass(next(iterator), 0)
    waited, start = 0.0, time.perf_counter()
    for it in range(1, iterations + 1):
        asked = time.perf_counter()
        batch = next(iterator)
        waited += time.perf_counter() - asked
        model.do_pass(batch, it)
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
    total = time.perf_counter() - start
    return total / iterations, waited / total


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', help='a data/ folder in the published layout (default: synthetic data)')
    parser.add_argument('--stages', default='0,1,2', help='stages to measure (default: 0,1,2)')
    parser.add_argument('--batches', type=int, default=4, help='batches timed per loader (0: skip; default: 4)')
    parser.add_argument('--workers', default=f'1,{os.cpu_count()}',
                        help='comma-separated worker counts (default: 1 and one per core)')
    parser.add_argument('--samples', type=int, default=20,
                        help='samples timed per stage for the CPU time per sample (default: 20)')
    parser.add_argument('--iterations', type=int, default=2,
                        help='training iterations timed per stage for the waiting share (0: skip; default: 2)')
    parser.add_argument('--iteration_batch', type=int,
                        help='batch of the timed training iterations (default: the published one; on a CPU with '
                             '7 GB free a step at batch 14 ran out of memory)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args()
    device = resolve_device(args.device)
    stages = [int(s) for s in args.stages.split(',')]
    workers = [int(w) for w in args.workers.split(',')]
    temp = None if args.data else tempfile.mkdtemp(prefix='qdmn_training_data_')
    try:
        data = args.data or os.path.join(temp, 'data')
        if temp:
            write_synthetic(data)
        print(f'{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, data: {args.data or "synthetic"}')
        if args.batches > 0:
            print('\n| stage | loader | batch | workers | samples/s | s per batch |\n| --- | --- | --- | --- | --- | --- |')
        for stage in stages if args.batches > 0 else []:
            for count in workers:
                para = stage_args(stage, data, temp is not None, count, args.device)
                rate = loader_throughput(para, args.batches)
                print(f'| {stage} | {STAGES[stage]} | {para.batch_size} | {count} | {rate:.1f} | '
                      f'{para.batch_size / rate:.2f} |', flush=True)
        print('\n| stage | loader | CPU s per sample | samples/s per free core |\n| --- | --- | --- | --- |')
        for stage in stages:
            cpu = cpu_seconds_per_sample(stage_args(stage, data, temp is not None, 0, args.device), args.samples)
            print(f'| {stage} | {STAGES[stage]} | {cpu:.3f} | {1 / cpu:.1f} |', flush=True)
        if args.iterations > 0:
            print('\n| stage | device | batch | workers | s per iteration | waiting for data |\n'
                  '| --- | --- | --- | --- | --- | --- |')
            for stage in stages:
                para = stage_args(stage, data, temp is not None, workers[-1], args.device)
                para.batch_size = args.iteration_batch or para.batch_size
                per_it, share = waiting_share(para, args.iterations, device)
                print(f'| {stage} | {device.type} | {para.batch_size} | {workers[-1]} | {per_it:.1f} | '
                      f'{100 * share:.1f} % |', flush=True)
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == '__main__':
    run_main(main)
