"""Processes of a torchrun job (or of the legacy torch.distributed.launch), for training and evaluation.

`Launch` reads this process's place in the job from the launcher's environment
(RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT); without a
launcher the process is a job of one. `eval_processes` runs an evaluation CLI's
videos on all processes of the job: rank 0 checks the input, every process
segments its share (`balanced_split`), and all of them agree on the outcome, so
a failure on one process ends every process with its message instead of a hang.
"""
import contextlib
import datetime
import os
from typing import NamedTuple

import torch
import torch.distributed as dist

from util.device import local_cuda_index, resolve_device
from util.errors import UserInputError, out_of_memory_line, print_error, print_error_line

# The processes wait for each other at the start (rank 0 checks every video and may download the
# model) and at the end (for the slowest process's last video). Failures are announced rather than
# timed out, and torchrun ends the job when a process dies, so this only has to outlast those waits.
WAIT_TIMEOUT = datetime.timedelta(hours=6)
FAILED_KEY = 'failed'


def add_launcher_args(parser):
    parser.add_argument('--local_rank', '--local-rank', type=int, default=None,
                        help='set by the legacy torch.distributed.launch (torchrun uses LOCAL_RANK)')


class Launch:
    """Rank, world size and local rank of this process, from torchrun / torch.distributed.launch or alone."""

    def __init__(self, local_rank=None):
        self.launched = 'WORLD_SIZE' in os.environ
        self.world_size = int(os.environ.get('WORLD_SIZE', 1))
        self.rank = int(os.environ.get('RANK', 0))
        local = os.environ.get('LOCAL_RANK', local_rank)
        self.local_rank = int(local) if local is not None else 0
        self.local_world_size = int(os.environ.get('LOCAL_WORLD_SIZE', 1))

    @property
    def is_main(self):
        return self.rank == 0

    def device_for(self, name):
        """This process's device for --device `name`: under a launcher, cuda means the local rank's
        device among those this process sees (util.device.local_cuda_index)."""
        device = resolve_device(name)
        if device.type == 'cuda':
            visible = torch.cuda.device_count()
            index = local_cuda_index(self.local_rank, visible) if self.launched else (device.index or 0)
            if index is None:
                raise UserInputError(f'--device {name}: process {self.rank} (local rank {self.local_rank}) has no '
                                     f'CUDA device of its own: it sees {visible} (start at most {visible} '
                                     'processes per node, or give each process its own device)')
            device = torch.device('cuda', index)
            torch.cuda.set_device(device)
        return device


def is_main_process():
    return Launch().is_main


def balanced_split(lengths, parts):
    """Shares videos of `lengths` frames among `parts` processes, balancing the frames.

    Greedy, longest video first, each to the process with the fewest frames so
    far (the lower rank on a tie). Returns each process's video indices in
    ascending order. Deterministic, so every process computes the same split
    without communicating.
    """
    shares = [[] for _ in range(parts)]
    loads = [0] * parts
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        rank = loads.index(min(loads))
        shares[rank].append(i)
        loads[rank] += lengths[i]
    return [sorted(share) for share in shares]


def cpu_threads_per_process(local_world_size):
    """This node's cores (those the process may use) shared among its processes."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    return max(1, cores // local_world_size)


class EvalGroup:
    """The processes of one evaluation run; a job of one without a launcher (no process group)."""

    def __init__(self, launch, flags=None):
        self.launch = launch
        self.rank, self.world_size, self.is_main = launch.rank, launch.world_size, launch.is_main
        self._flags = flags   # key-value store shared by the processes (None when alone)
        self.device = None

    def together(self, work):
        """Runs work() here and returns the results of every process, in rank order, once all are done.

        If work() raised on any process, every process ends: each prints one
        line (the failed ones their error, the others which rank failed) and
        exits with code 2 for bad input, 1 otherwise. Alone, work() just runs.
        """
        if self._flags is None:
            return [work()]
        error = None
        try:
            outcome = _Outcome(result=work())
        except Exception as e:
            error = e
            self._flags.set(FAILED_KEY, str(self.rank))   # the others stop at their next frame
            outcome = _Outcome(failure=_one_line(e), bad_input=isinstance(e, UserInputError))
        outcomes = [None] * self.world_size
        dist.all_gather_object(outcomes, outcome)
        failed = [(rank, o) for rank, o in enumerate(outcomes) if o.failure is not None]
        if not failed:
            return [o.result for o in outcomes]
        if error is not None:
            code = print_error(error)
        else:
            rank, first = failed[0]
            print_error_line(f'stopped because rank {rank} failed: {first.failure}')
            code = 2 if first.bad_input else 1
        # torchrun stops the whole job as soon as one process exits with an error:
        # wait until every process has printed its line
        dist.barrier()
        raise SystemExit(code)

    def on_main(self, prepare):
        """prepare() on rank 0 (the checks, the model download); every process gets its result."""
        return self.together(prepare if self.is_main else lambda: None)[0]

    def share(self, lengths):
        """This process's videos of `lengths` ({video: frames to process}), in the given order."""
        names = list(lengths)
        return [names[i] for i in balanced_split([lengths[n] for n in names], self.world_size)[self.rank]]

    def failed_elsewhere(self):
        """Whether another process failed: checked after every frame, so the job ends promptly."""
        return self._flags is not None and self._flags.check([FAILED_KEY])


class _Outcome(NamedTuple):
    """What one process's work() gave: its result, or one line saying why it failed."""
    result: object = None
    failure: str = None
    bad_input: bool = False


def _one_line(error):
    if isinstance(error, UserInputError):
        return str(error)
    if out_of_memory_line(error):
        return out_of_memory_line(error)
    text = str(error).strip().splitlines()
    return f'{type(error).__name__}: {text[0]}' if text else type(error).__name__


@contextlib.contextmanager
def eval_processes(device_name, local_rank=None):
    """Yields the EvalGroup of this run, its device chosen; under a launcher, joins the job's gloo group.

    gloo also when the processes run on GPUs: they exchange only a few small
    messages, never tensors. On CPU each process gets its share of the node's
    cores (torchrun's own default is one thread per process).
    """
    launch = Launch(local_rank)
    flags = None
    if launch.launched:
        store, rank, world_size = next(dist.rendezvous('env://', timeout=WAIT_TIMEOUT))
        dist.init_process_group('gloo', store=store, rank=rank, world_size=world_size, timeout=WAIT_TIMEOUT)
        flags = dist.PrefixStore('qdmn-eval', store)
    try:
        group = EvalGroup(launch, flags)
        group.device = group.together(lambda: launch.device_for(device_name))[group.rank]
        if launch.launched and group.device.type == 'cpu':
            torch.set_num_threads(cpu_threads_per_process(launch.local_world_size))
        yield group
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
