"""Per-stage times, FPS and peak memory of DAVIS inference, in fp32 and with --amp.

    python scripts/benchmark_inference.py                                   # synthetic, 50 and 400 frames
    python scripts/benchmark_inference.py --davis data/DAVIS/2016 --video blackswan --frames 12

Each (length, precision) runs in a fresh process (peak RSS is per process)
through the pipeline the CLIs run (pipeline.video.VideoRun): frames decoded
ahead in a thread, PNGs written behind in another. Stages are timed around
the network's calls: query encoder (with the gated key/value projection),
memory read, ASPP + decoder, memory encoder (with the quality head); "other"
is the rest of the wall time of the main thread (aggregation, memory bank,
argmax, waiting for a frame). Decoding and writing run in their own threads
and overlap the network; their own times are listed separately. faults/f
is the process's minor page faults per frame (memory handed back to the
system and faulted in again: util/allocator.py keeps it near 0 on glibc).

Under the times, the achieved GFLOP/s of each network stage: its
multiply-adds (x2) counted per call, by hooks on every convolution and linear
layer and from the shapes of the memory read (affinity and weighted sum of
the top-k values), over its time; elementwise work is not counted, so the
distance to the convolutions' peak is what the stage loses to it.

Without --davis the frames are synthetic (ellipses drifting over a texture,
written once as a DAVIS tree) and every due frame passes the quality gate
(--quality_thr -1): the worst case, in which the memory fills to capacity
and then evicts, so peak memory at 400 frames against 50 shows whether it
stays flat.
"""
import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from datasets.davis_test_dataset import DAVISTestDataset  # noqa: E402
from model import inference_mode  # noqa: E402
from model.inference_mode import optimize_for_inference  # noqa: E402
from model.network import QDMN  # noqa: E402
from pipeline.davis import davis_job  # noqa: E402
from pipeline.video import RunOptions, VideoRun  # noqa: E402
from qdmn import Network, load_network  # noqa: E402
from util.image_io import write_palette_png  # noqa: E402
from util.cli import HelpFormatter, float_arg, int_arg, top_k_arg  # noqa: E402
from util.errors import run_main  # noqa: E402
from util.palette import DAVIS_PALETTE  # noqa: E402

# network call -> stage; 'decode*' and 'write*' are the I/O threads' own times
STAGES = {'encode_query': 'query', 'query_key_value': 'query', 'read': 'read', 'segment': 'decoder',
          'encode_memory': 'memory'}
ORDER = ['query', 'read', 'decoder', 'memory', 'other', 'decode*', 'write*']


def write_synthetic_davis(root, frames, height, width, objects):
    """Ellipses drifting over a texture as a DAVIS tree (JPEG frames, a palette first annotation)."""
    video = 'synthetic'
    images = os.path.join(root, 'JPEGImages', '480p', video)
    annotations = os.path.join(root, 'Annotations', '480p', video)
    os.makedirs(images)
    os.makedirs(annotations)
    os.makedirs(os.path.join(root, 'ImageSets', '2017'))
    with open(os.path.join(root, 'ImageSets', '2017', 'val.txt'), 'w') as f:
        f.write(video + '\n')
    ys, xs = np.mgrid[-1:1:height * 1j, -1:1:width * 1j]
    texture = 0.3 * np.sin(7 * xs + 3 * ys) * np.cos(5 * ys)
    for t in range(frames):
        rgb = np.repeat(texture[..., None], 3, axis=2)
        labels = np.zeros((height, width), np.uint8)
        for k in range(objects):
            cx, cy = 0.6 * np.sin(0.05 * t + 2.0 * k), 0.4 * np.cos(0.03 * t + 1.3 * k)
            inside = ((xs - cx) / 0.3) ** 2 + ((ys - cy) / 0.4) ** 2 < 1
            rgb[inside, k % 3] += 0.5
            labels[inside] = k + 1
        Image.fromarray(((rgb + 0.5).clip(0, 1) * 255).astype(np.uint8)).save(
            os.path.join(images, f'{t:05d}.jpg'), quality=90)
        if t == 0:
            img = Image.fromarray(labels, mode='P')
            img.putpalette(DAVIS_PALETTE.reshape(-1).tolist())
            img.save(os.path.join(annotations, '00000.png'))
    return root, video


def timed(function, name, totals, sync, stage=None):
    """`function` timed into totals[name]; `stage` (a one-item list) names the running stage meanwhile."""
    def wrapper(*args, **kwargs):
        if stage is not None:
            stage[0] = name
        start = time.perf_counter()
        out = function(*args, **kwargs)
        sync()
        totals[name] += time.perf_counter() - start
        return out
    return wrapper


def count_flops(module, stage, flops):
    """Adds the FLOPs (2 per multiply-add) of every convolution and linear layer of `module` to
    flops[stage[0]] as they run: hooks on the plain ones, and a wrapper of the oneDNN call
    through which the --amp network runs the others (model.inference_mode.conv_post_ops)."""
    def add_conv(conv, out):
        k = conv.kernel_size[0] * conv.kernel_size[1] * conv.in_channels // conv.groups
        flops[stage[0]] += 2 * out.numel() * k

    def linear_flops(linear, inputs, out):
        flops[stage[0]] += 2 * out.numel() * linear.in_features
    for m in module.modules():
        if type(m) is torch.nn.Conv2d:
            m.register_forward_hook(lambda conv, inputs, out: add_conv(conv, out))
        elif isinstance(m, torch.nn.Linear):
            m.register_forward_hook(linear_flops)
    conv_post_ops = inference_mode.conv_post_ops

    def counted(conv, x, *args, **kwargs):
        out = conv_post_ops(conv, x, *args, **kwargs)
        add_conv(conv, out)
        return out
    inference_mode.conv_post_ops = counted


def read_flops(read, flops):
    """The memory read with its FLOPs added to flops['read']: the affinity of every query pixel with
    every memory pixel, then the weighted sum of the values it reads (top-k or all)."""
    def wrapper(mem_key, mem_value, query_key, query_value, top_k=None, km_sigma=None):
        memory_pixels, query_pixels = mem_key[0, 0].numel(), query_key[0, 0].numel()
        picked = memory_pixels if top_k is None else min(top_k, memory_pixels)
        flops['read'] += 2 * mem_key.shape[0] * query_pixels * (
            mem_key.shape[1] * memory_pixels + mem_value.shape[1] * picked)
        return read(mem_key, mem_value, query_key, query_value, top_k, km_sigma)
    return wrapper


def timed_iterator(iterator, name, totals):
    """`iterator` whose every next() (a frame's decoding) is timed."""
    while True:
        start = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            return
        totals[name] += time.perf_counter() - start
        yield item


def worker(args):
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == 'cuda' else (lambda: None)
    if args.model:
        net = load_network(args.model, device, args.amp)
    else:  # random weights: the same compute as s012
        from util.device import configure_cuda, precision
        mode = precision(device, args.amp)
        configure_cuda(device, args.amp, fixed_shapes=True)
        net = Network(optimize_for_inference(QDMN().to(device), bf16=mode == 'bf16'), device, mode)
    totals, flops, stage = defaultdict(float), defaultdict(int), [None]
    count_flops(net.module, stage, flops)
    net.module.read = read_flops(net.module.read, flops)
    for method, name in STAGES.items():
        setattr(net.module, method, timed(getattr(net.module, method), name, totals, sync, stage))

    with tempfile.TemporaryDirectory() as out:
        job = davis_job(DAVISTestDataset(args.davis, imset=args.imset), args.video, out)
        frames = job.frames
        # the first --worker frames, their decoding (in the decode thread) and writing (in the writer's) timed
        job.frames = lambda: timed_iterator(itertools.islice(frames(), args.worker), 'decode*', totals)
        job.frame_names, job.frame_count = job.frame_names[:args.worker], args.worker
        job.write_mask = timed(write_palette_png, 'write*', totals, lambda: None)
        options = RunOptions('davis', dict(top_k=args.top_k, mem_freq=args.mem_freq, quality_thr=args.quality_thr,
                                           memory_thr=args.memory_thr), resume_every=0)
        run = VideoRun(net, job, options, report=lambda line: None)
        start, faults = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        frames = sum(1 for _ in run)
        wall = time.perf_counter() - start
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    main_stages = sum(v for k, v in totals.items() if not k.endswith('*'))
    totals['other'] = wall - main_stages
    engine = run.segmenter.engine
    print(json.dumps({
        'frames': frames, 'precision': net.precision, 'wall': wall, 'fps': frames / wall, 'stages': totals,
        'flops': flops,
        'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        'page_faults': faults,
        'memory_entries': len(engine.bank.entries()), 'decisions': engine.decisions}))


def run(args, frames, amp):
    options = {k: v for k, v in vars(args).items() if k not in ('frames', 'worker', 'amp', 'precisions')
               and v is not None}
    cmd = [sys.executable, os.path.abspath(__file__), '--worker', str(frames)] + (['--amp'] if amp else [])
    for key, value in options.items():
        cmd += [f'--{key}', str(value)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f'benchmark worker failed:\n{result.stderr.strip()}')
    return json.loads(result.stdout.strip().splitlines()[-1])


def print_row(r):
    stages = ' '.join(f"{r['stages'].get(s, 0.0) / r['frames'] * 1000:7.0f}" for s in ORDER)
    print(f"{r['frames']:6d}  {r['precision']:>4s}  {r['fps']:6.2f}  {r['wall']:8.1f}  {stages}  "
          f"{r['peak_rss_mb']:7.0f}  {r['page_faults'] / r['frames']:8.0f}  {r['memory_entries']:3d}  {r['decisions']}")
    rates = ' '.join(f"{r['flops'][s] / r['stages'][s] / 1e9:7.0f}" if r['flops'].get(s) else ' ' * 7
                     for s in ORDER)
    gflop = sum(r['flops'].values()) / r['frames'] / 1e9
    print(f"{'':6s}  {'':4s}  {'GFLOP/s per stage':>16s}  {rates}  ({gflop:.0f} GFLOP per frame)", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('--frames', type=int_arg('--frames', 2), nargs='+', default=[50, 400],
                        help='video lengths to run')
    parser.add_argument('--precisions', nargs='+', choices=['fp32', 'amp'], default=['fp32', 'amp'],
                        help='fp32 and/or --amp runs')
    parser.add_argument('--davis', help='DAVIS root with real frames (default: a synthetic video)')
    parser.add_argument('--video', help='video of --davis (its first --frames frames are used)')
    parser.add_argument('--imset', default='2016/val.txt', help='image set of --davis listing --video')
    parser.add_argument('--height', type=int_arg('--height', 32), default=240, help='synthetic frame height')
    parser.add_argument('--width', type=int_arg('--width', 32), default=432, help='synthetic frame width')
    parser.add_argument('--objects', type=int_arg('--objects', 1), default=2, help='objects of the synthetic video')
    parser.add_argument('--model', help='checkpoint (default: a randomly initialised network, same compute)')
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N')
    parser.add_argument('--top_k', type=top_k_arg, default=50, help='memory pixels read per query pixel (or "none")')
    parser.add_argument('--mem_freq', type=int_arg('--mem_freq', 1), default=5,
                        help='minimum frame gap between stored memory frames')
    parser.add_argument('--memory_thr', type=int_arg('--memory_thr', 0), default=20,
                        help='capacity of the propagated memory')
    parser.add_argument('--quality_thr', type=float_arg('--quality_thr'),
                        help='default: -1 (every due frame stored) on the synthetic video, 0.8 on real frames')
    parser.add_argument('--amp', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--worker', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if (args.davis is None) != (args.video is None):
        parser.error('--davis and --video go together')
    with tempfile.TemporaryDirectory() as tmp:
        if args.davis is None:
            args.davis, args.video = write_synthetic_davis(tmp, max(args.frames), args.height, args.width,
                                                           args.objects)
            args.imset = '2017/val.txt'
            args.quality_thr = -1.0 if args.quality_thr is None else args.quality_thr
        args.quality_thr = 0.8 if args.quality_thr is None else args.quality_thr
        available = len(os.listdir(os.path.join(args.davis, 'JPEGImages', '480p', args.video)))
        if max(args.frames) > available:
            parser.error(f'{args.video} has {available} frames (scripts/expand_long_video.py makes longer videos)')
        print(f'load average {os.getloadavg()[0]:.2f} (measure on an idle machine); torch threads '
              f'{torch.get_num_threads()}; times in ms per frame')
        print(' frames  prec     FPS   wall s  ' + ' '.join(f'{s:>7s}' for s in ORDER)
              + '  RSS MB  faults/f  mem  decisions')
        rows = []
        for n in args.frames:
            for p in args.precisions:
                rows.append(run(args, n, p == 'amp'))
                print_row(rows[-1])
    by = {(r['frames'], r['precision'] != 'fp32'): r for r in rows}
    for n in args.frames:
        if (n, False) in by and (n, True) in by:
            print(f"{n} frames: --amp ({by[n, True]['precision']}) is "
                  f"{by[n, False]['wall'] / by[n, True]['wall']:.2f}x fp32's speed")
    for amp in (False, True):
        first, last = by.get((args.frames[0], amp)), by.get((args.frames[-1], amp))
        if first and last and first is not last:
            print(f"{'amp' if amp else 'fp32'}: peak RSS at {last['frames']} frames / {first['frames']}: "
                  f"{last['peak_rss_mb'] / first['peak_rss_mb']:.3f}; time per frame ratio "
                  f"{(last['wall'] / last['frames']) / (first['wall'] / first['frames']):.3f}")


if __name__ == '__main__':
    run_main(main)
