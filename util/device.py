"""The compute device: choosing it (--device, torchrun's LOCAL_RANK), its precision and CUDA settings,
autocast, peak memory, and the message for running out of GPU memory."""
import contextlib
import re
import sys
import warnings

import torch

from util.errors import UserInputError

# What lowers GPU memory, for the out-of-memory message (docs/gpu.md).
MEMORY_OPTIONS = ('a smaller --size', 'the default top-k read (without --no_top / --use_km)', '--amp',
                  'a lower --memory_thr', 'a smaller --batch_size when training')


def default_device():
    """--device when it is not given (None): cuda when available, else cpu."""
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def resolve_device(name):
    """--device `name` as a torch.device; a device this machine does not have is one clear line."""
    name = name or default_device()
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UserInputError(f'--device {name}: {e}') from None
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise UserInputError(f'--device {name}: CUDA is not available on this machine (use --device cpu)')
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserInputError(f'--device {name}: this process sees {torch.cuda.device_count()} CUDA '
                                 f'device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})')
    return device


def local_cuda_index(local_rank, visible):
    """The CUDA device of the `local_rank`-th process of a node whose processes each see `visible` devices.

    All of the node's devices visible (torchrun's usual case): the local rank's own.
    One device visible while the node runs several processes: the launcher gave each
    process its own (CUDA_VISIBLE_DEVICES per process, e.g. SLURM --gpus-per-task), so cuda:0.
    Returns None when the process has no device of its own.
    """
    if local_rank < visible:
        return local_rank
    return 0 if visible == 1 else None


def native_bf16():
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX) through PyTorch's oneDNN, which
    the bf16 network calls directly (model.inference_mode); emulated bf16 is slower than fp32."""
    try:
        return torch.backends.mkldnn.is_available() and (
            torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # private helpers of torch 2.x; without them, assume no
        return False


def precision(device, amp):
    """'fp16' (CUDA autocast), 'bf16' (CPU bf16 convolutions, model.inference_mode) or 'fp32'.

    fp32 on CUDA is true fp32: configure_cuda turns TF32 off unless --amp.
    """
    if not amp:
        return 'fp32'
    if device.type == 'cuda':
        return 'fp16'
    if device.type == 'cpu' and native_bf16():
        return 'bf16'
    warnings.warn(f'--amp: no native bfloat16 on this {device.type} (it needs AVX512-BF16 or AMX); running in fp32')
    return 'fp32'


def configure_cuda(device, amp, fixed_shapes):
    """Process-wide CUDA settings of a run on `device` (nothing for other devices).

    TF32 (10-bit mantissa) only with --amp, and then only for the convolutions left in
    fp32: matrix products stay IEEE fp32, as the memory read's top-k needs (model/memory_read.py).
    cudnn.benchmark tunes kernels per input shape: worth it only when the shapes stay fixed
    (the DAVIS engine, training crops), not when objects join mid-video (YouTube-VOS engine).
    """
    if device.type != 'cuda':
        return
    torch.backends.cudnn.allow_tf32 = amp
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = fixed_shapes


def autocast(device, enabled):
    """fp16 autocast on CUDA; a no-op elsewhere (CPU bf16 is a property of the network, see precision()).

    The precision-sensitive parts (memory read, quality head, sigmoid and aggregation)
    run in fp32 inside it (model/memory_read.py, model/modules.py, model/network.py).
    """
    if enabled and device.type == 'cuda':
        return torch.autocast('cuda', dtype=torch.float16)
    return contextlib.nullcontext()


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


def out_of_memory_message(error):
    """One line for a torch.OutOfMemoryError: what ran out, and the options that need less memory."""
    text = str(error)
    where = re.search(r'GPU (\d+)', text)
    size = re.search(r'Tried to allocate ([\d.]+ \w+)', text)
    return ('CUDA out of memory' + (f' on GPU {where.group(1)}' if where else '')
            + (f' (tried to allocate {size.group(1)})' if size else '')
            + '; to need less memory use ' + ', '.join(MEMORY_OPTIONS) + ', or a GPU with more free memory')
