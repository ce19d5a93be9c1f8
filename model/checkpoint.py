"""Loading QDMN weights safely and strictly, with messages a user can act on; saving them durably."""
import contextlib
import errno
import os
import re
import warnings

import torch
import torch.nn.init

from model.network import QDMN
from util.download import SYNTHETIC_MODEL
from util.errors import UserInputError

MEMORY_CONV1 = 'mask_rgb_encoder.conv1.weight'


def load_file(path, hint=''):
    """torch.load with weights_only=True (a checkpoint can never run pickled code) and clear errors."""
    if os.path.isdir(path):
        raise UserInputError(f'{path}: is a directory, not a checkpoint file')
    if not os.path.isfile(path):
        raise UserInputError(f'{path}: checkpoint not found{hint}')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception:
        # torch's own message advises weights_only=False: never for a file of unknown origin
        raise UserInputError(f'{path}: not a PyTorch checkpoint of tensors (unreadable, truncated, or holding '
                             'other Python objects, which are never loaded for safety)') from None


def read_state_dict(path):
    """Reads a plain state dict (the published file) or a training checkpoint ({'network': ...})."""
    data = load_file(path, hint=' (run scripts/download_model.py to fetch s012)')
    if isinstance(data, dict) and isinstance(data.get('network'), dict):
        data = data['network']
    if not isinstance(data, dict) or not all(torch.is_tensor(v) for v in data.values()):
        raise UserInputError(f'{path}: expected a state dict of tensors or a dict with a "network" entry')
    # Weights saved from a DistributedDataParallel wrapper carry a 'module.' prefix.
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in data.items()}


def state_dict_mismatch(network, state_dict):
    """Lists missing, unexpected and mis-shaped tensors; empty when a strict load will succeed."""
    expected = network.state_dict()
    problems = []
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing:
        problems.append(f'missing {len(missing)}: ' + ', '.join(missing[:8]) + (' ...' if len(missing) > 8 else ''))
    if unexpected:
        problems.append(f'unexpected {len(unexpected)}: ' + ', '.join(unexpected[:8]) + (' ...' if len(unexpected) > 8 else ''))
    shaped = [f'{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}'
              for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    if shaped:
        problems.append(f'mis-shaped {len(shaped)}: ' + ', '.join(shaped[:8]) + (' ...' if len(shaped) > 8 else ''))
    return problems


def load_network(network, state_dict, source='checkpoint', assign=False):
    """Strict load; `assign` makes the network use the state dict's tensors instead of copying them."""
    problems = state_dict_mismatch(network, state_dict)
    if problems:
        raise UserInputError(f'{source}: does not match the QDMN architecture ({"; ".join(problems)})')
    network.load_state_dict(state_dict, strict=True, assign=assign)
    return network


@contextlib.contextmanager
def random_init_skipped():
    """torch.nn.init does nothing while a network whose every tensor is then loaded strictly is built:
    drawing QDMN's 105 M random weights first takes half a second (building on the meta device
    instead takes 1.2 s in torch 2.14)."""
    names = [n for n in dir(torch.nn.init) if n.endswith('_') and not n.startswith('_')]
    originals = {n: getattr(torch.nn.init, n) for n in names}
    for n in names:
        setattr(torch.nn.init, n, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for n, f in originals.items():
            setattr(torch.nn.init, n, f)


SYNTHETIC_SEED = 0


def synthetic_network():
    """The multi-object architecture with fixed, seeded random weights (--model synthetic): every
    step of the pipeline runs offline, without a checkpoint; its masks mean nothing."""
    warnings.warn(f'--model {SYNTHETIC_MODEL}: RANDOM WEIGHTS, NOT A TRAINED MODEL: the masks are meaningless '
                  '(a dry run of the pipeline; fetch s012 with scripts/download_model.py for real results)')
    with torch.random.fork_rng(devices=[]):   # the caller's random state stays untouched
        torch.manual_seed(SYNTHETIC_SEED)
        return QDMN(single_object=False)


def build_network(path, device='cpu'):
    """Builds the single- or multi-object network that the checkpoint at `path` was trained as
    (`synthetic`: see synthetic_network)."""
    if path == SYNTHETIC_MODEL:
        return synthetic_network().to(device).eval()
    state_dict = read_state_dict(path)
    conv1 = state_dict.get(MEMORY_CONV1)
    single_object = conv1 is not None and conv1.dim() == 4 and conv1.shape[1] == 4
    with random_init_skipped():
        network = QDMN(single_object=single_object)
    # assign: the checkpoint's tensors become the weights, so they are in memory once, not twice
    return load_network(network, state_dict, source=path, assign=True).to(device).eval()


# --- saving --------------------------------------------------------------------------------

TEMP_FILE = re.compile(r'.+\.pth\.tmp(\d+)')   # <file>.pth.tmp<pid of the saving process>


def atomic_save(obj, path):
    """torch.save to `path` so that it always holds a complete file: written to <path>.tmp<pid>,
    flushed and fsynced, renamed over `path`, and the folder fsynced (the rename survives a crash).

    A write error, also one reported only at fsync or close (NFS, a quota), removes the temporary
    file and leaves the previous `path` in place; it is raised as one line.
    """
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        with open(tmp, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise UserInputError(f'{path}: cannot save ({e.strerror or e}); the previous file, if any, is '
                                 'kept') from None
        raise
    fsync_folder(os.path.dirname(path) or '.')


def fsync_folder(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno != errno.EINVAL:   # EINVAL: this file system does not sync folders (nothing to wait for)
            raise UserInputError(f'{folder}: cannot sync the folder after a save ({e.strerror})') from None
    finally:
        os.close(fd)


def remove_stale_temp_files(folder):
    """Removes the temporary files of saves that were killed (their process is gone); returns their names.

    Only this run's rank 0 saves into its folder, so a temporary file whose process no longer
    runs here is left over; one whose process is alive (another job on this machine) is kept.
    """
    removed = []
    for name in sorted(os.listdir(folder)):
        match = TEMP_FILE.fullmatch(name)
        if match and not process_alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, name))
            removed.append(name)
    return removed


def process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, another user's
        return True
    return True
