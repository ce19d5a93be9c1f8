"""Shared command-line plumbing: help format, device and memory flags (the device itself: util/device.py)."""
import argparse
import importlib.util

import torch

from util.errors import UserInputError


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's layout and shows every option's default."""


def add_device_args(parser):
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='cpu, cuda or cuda:N (cuda when available)')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: fp16 autocast on CUDA; bfloat16 convolutions on a CPU with native '
                             'bf16 (AVX512-BF16 or AMX), else fp32')


def add_skip_bad_videos_arg(parser):
    parser.add_argument('--skip_bad_videos', action='store_true',
                        help='segment the videos that pass the up-front checks, list the others at the end '
                             'and exit with code 2 (default: refuse to start while any video is bad)')


def top_k_arg(text):
    """--top_k value: an integer, or "none" for a dense read of every memory pixel."""
    return None if text.lower() == 'none' else int(text)


def add_memory_args(parser):
    """--top_k, the published --no_top and --use_km, and --memory_policy."""
    parser.add_argument('--top_k', type=top_k_arg, default=50, help='memory pixels read per query pixel (or "none")')
    parser.add_argument('--no_top', action='store_true',
                        help='read every memory pixel (published flag; = --top_k none)')
    parser.add_argument('--use_km', action='store_true',
                        help='kernelized memory read (published flag): a Gaussian (sigma 5.6) around each memory '
                             'pixel\'s best-matching query position, applied before the top-k')
    parser.add_argument('--memory_policy', choices=['quality', 'recent'], default='quality',
                        help='quality: QDMN\'s quality-gated memory; recent: every due frame, oldest evicted '
                             '(the baseline of the paper\'s long-video comparison)')


class _FlagNeedingMatplotlib(argparse.Action):
    """A store_true flag that checks at parse time, before any compute, that matplotlib is installed
    (it is imported only when the plot is drawn)."""

    def __init__(self, option_strings, dest, **kwargs):
        kwargs['default'] = False   # argparse passes default=None for an option without one
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if importlib.util.find_spec('matplotlib') is None:
            raise UserInputError(f'{option_string} needs matplotlib (pip install matplotlib==3.11.2)')
        setattr(namespace, self.dest, True)


def add_memory_log_arg(parser, where):
    parser.add_argument('--save_memory_log', action=_FlagNeedingMatplotlib,
                        help='write every frame\'s quality scores and memory decision as a CSV and a PNG plot '
                             f'to {where}, once the video is complete (see README)')


def memory_options(args):
    """Engine keyword arguments of the memory flags."""
    from model.memory_read import KM_SIGMA
    return {'top_k': None if args.no_top else args.top_k, 'km_sigma': KM_SIGMA if args.use_km else None,
            'memory_policy': args.memory_policy}
