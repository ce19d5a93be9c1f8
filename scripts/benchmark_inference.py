"""Per-frame time and peak memory of the DAVIS engine on synthetic videos of several lengths.

    python scripts/benchmark_inference.py --frames 50 400 --height 240 --width 432

Each length runs in a fresh process (peak RSS is per process). Frames are
rendered on the fly and outputs dropped, as a streaming run reads and writes
them, so what grows with the length is the engine's own state. By default
every due frame passes the quality gate (--quality_thr -1), the worst case:
the memory bank fills to its capacity and then evicts.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from inference_core import InferenceCore, propagate  # noqa: E402
from model.network import QDMN  # noqa: E402
from model.checkpoint import build_network  # noqa: E402


def synthetic_video(n, height, width, objects, device):
    """Ellipses drifting over a textured background, rendered one frame at a time."""
    ys = torch.linspace(-1, 1, height, device=device).view(-1, 1)
    xs = torch.linspace(-1, 1, width, device=device).view(1, -1)
    texture = torch.sin(7 * xs + 3 * ys) * torch.cos(5 * ys)
    for t in range(n):
        frame = texture.expand(3, height, width).clone() * 0.3
        masks = []
        for k in range(objects):
            cx = 0.6 * torch.sin(torch.tensor(0.05 * t + 2.0 * k))
            cy = 0.4 * torch.cos(torch.tensor(0.03 * t + 1.3 * k))
            inside = ((xs - cx) / 0.3) ** 2 + ((ys - cy) / 0.4) ** 2 < 1
            frame[k % 3] += inside.float()
            masks.append(inside.float())
        yield frame.unsqueeze(0), torch.stack(masks).unsqueeze(1)


def worker(args):
    torch.manual_seed(0)
    device = torch.device(args.device)
    net = (build_network(args.model, device) if args.model else QDMN().to(device).eval())
    core = InferenceCore(net, top_k=args.top_k, mem_freq=args.mem_freq,
                         quality_thr=args.quality_thr, memory_thr=args.memory_thr)
    video = synthetic_video(args.worker, args.height, args.width, args.objects, device)
    first_frame, first_masks = next(video)

    def frames():
        yield first_frame
        for frame, _ in video:
            yield frame

    times, last = [], time.perf_counter()
    for _ in propagate(core, frames(), first_masks):
        now = time.perf_counter()
        times.append(now - last)
        last = now
    steady = times[5:] or times
    print(json.dumps({
        'frames': args.worker, 'sec_per_frame': sum(steady) / len(steady),
        'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        'memory_entries': len(core.bank.entries()), 'decisions': core.decisions}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--frames', type=int, nargs='+', default=[50, 400])
    parser.add_argument('--height', type=int, default=240)
    parser.add_argument('--width', type=int, default=432)
    parser.add_argument('--objects', type=int, default=2)
    parser.add_argument('--model', help='checkpoint (default: randomly initialised multi-object network)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--top_k', type=int, default=50)
    parser.add_argument('--mem_freq', type=int, default=5)
    parser.add_argument('--memory_thr', type=int, default=20)
    parser.add_argument('--quality_thr', type=float, default=-1.0)
    parser.add_argument('--worker', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    rows = []
    for n in args.frames:
        options = {k: v for k, v in vars(args).items() if k not in ('frames', 'worker') and v is not None}
        cmd = [sys.executable, __file__, '--worker', str(n)]
        for key, value in options.items():
            cmd += [f'--{key}', str(value)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"N={r['frames']:5d}  {r['sec_per_frame'] * 1000:8.1f} ms/frame  peak RSS {r['peak_rss_mb']:7.0f} MB  "
              f"memory entries {r['memory_entries']:3d}  {r['decisions']}", flush=True)
    base = rows[0]
    for r in rows[1:]:
        print(f"peak RSS N={r['frames']} / N={base['frames']}: {r['peak_rss_mb'] / base['peak_rss_mb']:.3f}; "
              f"time per frame ratio {r['sec_per_frame'] / base['sec_per_frame']:.3f}")


if __name__ == '__main__':
    main()
