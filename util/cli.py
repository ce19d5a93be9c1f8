"""Shared command-line plumbing: device choice, autocast, clean error exits."""
import contextlib
import sys
import warnings

import torch

from util.errors import UserInputError


def add_device_args(parser):
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='cpu, cuda or cuda:N (default: cuda when available)')
    parser.add_argument('--amp', action='store_true', help='fp16 autocast (CUDA only)')


def top_k_arg(text):
    """--top_k value: an integer, or "none" for a dense read of every memory pixel."""
    return None if text.lower() == 'none' else int(text)


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


def autocast(device, enabled):
    """fp16 autocast on CUDA; a no-op elsewhere (CPU fp16 is slower and less accurate)."""
    if enabled and device.type != 'cuda':
        warnings.warn('--amp only applies on CUDA; running in fp32')
    if enabled and device.type == 'cuda':
        return torch.autocast('cuda', dtype=torch.float16)
    return contextlib.nullcontext()
