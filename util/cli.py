"""Shared command-line plumbing: help format, device and generic flags (the device itself: util/device.py;
the engine and run flag groups, whose defaults come from the presets: pipeline/flags.py)."""
import argparse
import importlib.util

import torch

from util.errors import UserInputError


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's layout and shows every option's default (but "None": its help says)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


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

