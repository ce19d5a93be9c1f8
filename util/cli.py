"""Shared command-line plumbing: help format, device choice, generic flags, autocast.

The engine and run flag groups are in pipeline/flags.py (they take their defaults from the presets)."""
import argparse
import contextlib
import importlib.util
import sys
import warnings

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


def peak_memory(device):
    """Peak resident memory of this process (and peak CUDA allocation), as text."""
    try:
        import resource  # Unix only
    except ImportError:
        text = 'peak RSS n/a'
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss *= 1 if sys.platform == 'darwin' else 1024  # bytes on macOS, KiB on Linux
        text = f'peak RSS {rss / 2**20:.0f} MB'
    if device.type == 'cuda':
        text += f', peak CUDA {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB'
    return text


def resolve_device(name):
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UserInputError(f'--device {name}: {e}') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise UserInputError(f'--device {name}: CUDA is not available on this machine (use --device cpu)')
    return device


def native_bf16():
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); emulated bf16 is slower than fp32."""
    try:
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    except AttributeError:  # private helpers of torch 2.x; without them, assume no
        return False


def precision(device, amp):
    """'fp16' (CUDA autocast), 'bf16' (CPU bf16 convolutions, model.inference_mode) or 'fp32'."""
    if not amp:
        return 'fp32'
    if device.type == 'cuda':
        return 'fp16'
    if device.type == 'cpu' and native_bf16():
        return 'bf16'
    warnings.warn(f'--amp: no native bfloat16 on this {device.type} (it needs AVX512-BF16 or AMX); running in fp32')
    return 'fp32'


def autocast(device, enabled):
    """fp16 autocast on CUDA; a no-op elsewhere (CPU bf16 is a property of the network, see precision()).

    The precision-sensitive parts (memory read, quality head, aggregation) run
    in fp32 inside it (model/memory_read.py, model/modules.py, inference_core.py).
    """
    if enabled and device.type == 'cuda':
        return torch.autocast('cuda', dtype=torch.float16)
    return contextlib.nullcontext()
