"""Whole-process time of eval_davis_2016.py (start-up, checkpoint loading, PNG writing and exit
included) of this checkout and of others, alternated so that every round sees the same machine.

    git worktree add ../qdmn-188829b 188829b                     # a baseline to compare with
    python scripts/benchmark_process.py --davis data/DAVIS/2016 --video blackswan --frames 12 \\
        --checkout ../qdmn-188829b --rounds 3

Each round runs every checkout (the --checkout ones first, then this one) in fp32 and with --amp,
each in a fresh process on the first --frames frames of --video, and prints the wall time; at
the end the median per configuration and its speed relative to the first checkout's, both as a
ratio of medians and as the median of each round's ratio (steadier when the machine's speed drifts). Without
--model the weights are the seeded random ones of `--model synthetic` (the compute of s012),
written to a file so that older checkouts read them too. Measure on an idle machine: the load
average is printed before and after.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from model.checkpoint import synthetic_network  # noqa: E402
from util.cli import HelpFormatter, int_arg  # noqa: E402
from util.errors import UserInputError, run_main  # noqa: E402

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def first_frames(davis, video, frames, root):
    """A DAVIS-2016 tree at `root` holding the first `frames` frames of `video` (links to --davis)."""
    for kind, ext in (('JPEGImages', '.jpg'), ('Annotations', '.png')):
        source = os.path.join(davis, kind, '480p', video)
        if not os.path.isdir(source):
            raise UserInputError(f'{source}: not found (--davis must be a DAVIS root holding --video)')
        names = sorted(n for n in os.listdir(source) if n.endswith(ext))[:frames]
        if kind == 'JPEGImages' and len(names) < frames:
            raise UserInputError(f'{source}: {len(names)} frames, fewer than --frames {frames}')
        target = os.path.join(root, kind, '480p', video)
        os.makedirs(target)
        for name in names:
            os.symlink(os.path.abspath(os.path.join(source, name)), os.path.join(target, name))
    os.makedirs(os.path.join(root, 'ImageSets', '2016'))
    with open(os.path.join(root, 'ImageSets', '2016', 'val.txt'), 'w') as f:
        f.write(video + '\n')
    return root


def timed_run(checkout, amp, model, davis, output):
    cmd = [sys.executable, os.path.join(checkout, 'eval_davis_2016.py'), '--model', model, '--davis', davis,
           '--output', output, '--device', 'cpu'] + (['--amp'] if amp else [])
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        raise UserInputError(f'{checkout}: eval_davis_2016.py failed:\n{result.stderr.strip()[-2000:]}')
    return wall


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument('--davis', required=True, help='DAVIS-2016 root with the video')
    parser.add_argument('--video', default='blackswan', help='video of --davis')
    parser.add_argument('--frames', type=int_arg('--frames', 2), default=12, help='its first frames to segment')
    parser.add_argument('--checkout', action='append', default=[],
                        help='another checkout to compare with (repeatable; e.g. a git worktree of a baseline)')
    parser.add_argument('--model', help='checkpoint (default: the seeded random weights of --model synthetic)')
    parser.add_argument('--rounds', type=int_arg('--rounds', 1), default=3, help='alternated rounds')
    parser.add_argument('--precisions', nargs='+', choices=['fp32', 'amp'], default=['fp32', 'amp'],
                        help='fp32 and/or --amp runs')
    args = parser.parse_args()
    checkouts = [os.path.abspath(c) for c in args.checkout] + [HERE]
    for checkout in checkouts:
        if not os.path.isfile(os.path.join(checkout, 'eval_davis_2016.py')):
            raise UserInputError(f'{checkout}: no eval_davis_2016.py (not a checkout of this repository)')
    with tempfile.TemporaryDirectory() as tmp:
        davis = first_frames(args.davis, args.video, args.frames, os.path.join(tmp, 'davis'))
        model = args.model
        if model is None:
            model = os.path.join(tmp, 'synthetic.pth')
            with warnings.catch_warnings():   # its "random weights" warning: known here
                warnings.simplefilter('ignore')
                torch.save(synthetic_network().state_dict(), model)
        print(f'load average {os.getloadavg()[0]:.2f} before (measure on an idle machine); '
              f'{args.frames} frames of {args.video}, {args.rounds} rounds')
        precisions = [p == 'amp' for p in args.precisions]
        configs = [(c, amp) for c in checkouts for amp in precisions]
        walls = {config: [] for config in configs}
        for r in range(args.rounds):
            for i, (checkout, amp) in enumerate(configs):
                wall = timed_run(checkout, amp, model, davis, os.path.join(tmp, f'output-{r}-{i}'))
                walls[checkout, amp].append(wall)
                print(f'round {r + 1}  {"amp " if amp else "fp32"}  {wall:6.2f} s  {checkout}', flush=True)
        print(f'load average {os.getloadavg()[0]:.2f} after')
        reference = {amp: statistics.median(walls[checkouts[0], amp]) for amp in precisions}
        print('precision  median  speed vs the first checkout: medians at the same precision, its --amp; '
              'median of the rounds\' own ratios (same precision)  checkout')
        for (checkout, amp), values in walls.items():
            median = statistics.median(values)
            paired = statistics.median(b / v for b, v in zip(walls[checkouts[0], amp], values))
            versus_amp = f'x{reference[True] / median:.2f}' if True in reference else '-'
            print(f'{"amp " if amp else "fp32"}  {median:6.2f} s  x{reference[amp] / median:.2f}  '
                  f'{versus_amp}  x{paired:.2f}  {checkout}')


if __name__ == '__main__':
    run_main(main)
