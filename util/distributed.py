"""Processes of a torchrun job (or of the legacy torch.distributed.launch), for training and evaluation.

`Launch` reads this process's place in the job from the launcher's environment
(RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT); without a
launcher the process is a job of one. `eval_processes` runs an evaluation CLI's
videos on all processes of the job: rank 0 checks the input, every process
segments its share (`balanced_split`), and all of them agree on the outcome, so
a failure on one process ends every process with its message instead of a hang;
a process that stops beating (frozen, cut off) is named after QDMN_PEER_TIMEOUT s.
"""
import contextlib
import datetime
import math
import os
import pickle
import signal
import threading
import time
from typing import NamedTuple

import torch
import torch.distributed as dist

from util.device import local_cuda_index, resolve_device
from util.errors import UserInputError, out_of_memory_line, print_error, print_error_line

# The processes wait for each other at the start (rank 0 checks every video and may download the
# model) and at the end (for the slowest process's last video), however long that takes, as long as
# the awaited processes beat; a process whose heartbeat stopped for this long is given up on.
PEER_TIMEOUT_ENV = 'QDMN_PEER_TIMEOUT'
DEFAULT_PEER_TIMEOUT = 300.0   # s
FAILED_KEY = 'failed'


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


class JobLost(Exception):
    """A process of the job, or the job's key-value store, stopped answering (one line, exit code 1)."""


class EvalGroup:
    """The processes of one evaluation run; a job of one without a launcher (no store)."""

    def __init__(self, launch, store=None, timeout=None):
        self.launch = launch
        self.rank, self.world_size, self.is_main = launch.rank, launch.world_size, launch.is_main
        self._store = store       # key-value store shared by the processes (None when alone)
        self._timeout = timeout   # s without a peer's heartbeat before giving up on it
        self._gathers = 0
        self.device = None

    def together(self, work):
        """Runs work() here and returns the results of every process, in rank order, once all are done.

        If work() raised on any process, every process ends: each prints one
        line (the failed ones their error, the others which rank failed) and
        exits with code 2 for bad input, 1 otherwise. Alone, work() just runs.
        """
        if self._store is None:
            return [work()]
        error = None
        try:
            outcome = _Outcome(result=work())
        except JobLost:
            raise
        except Exception as e:
            error = e
            self._call(self._store.set, FAILED_KEY, str(self.rank))   # the others stop after their current video
            outcome = _Outcome(failure=_one_line(e), bad_input=isinstance(e, UserInputError))
        outcomes = self._gather(outcome)
        failed = [(rank, o) for rank, o in enumerate(outcomes) if o.failure is not None]
        if not failed:
            return [o.result for o in outcomes]
        if error is not None:
            code = print_error(error)
        else:
            rank, first = failed[0]
            print_error_line(f'stopped because rank {rank} failed: {first.failure}')
            code = 2 if first.bad_input else 1
        # torchrun stops the whole job (SIGTERM) as soon as one process exits with an error: wait until
        # every process has printed its line, and let no SIGTERM cut short this process's last cleanup
        # (rank 0 releasing the output's lock)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self._gather(None)
        raise SystemExit(code)

    def on_main(self, prepare):
        """prepare() on rank 0 (the checks, the model download); every process gets its result."""
        return self.together(prepare if self.is_main else lambda: None)[0]

    def share(self, lengths):
        """This process's videos of `lengths` ({video: frames to process}), in the given order."""
        names = list(lengths)
        return [names[i] for i in balanced_split([lengths[n] for n in names], self.world_size)[self.rank]]

    def failed_elsewhere(self):
        """Whether another process failed: checked between videos, so the job ends after them."""
        return self._store is not None and self._call(self._store.check, [FAILED_KEY])

    def _gather(self, value):
        """`value` of every process, in rank order: waits as long as the missing processes beat."""
        self._gathers += 1
        keys = [f'gather{self._gathers}/{rank}' for rank in range(self.world_size)]
        self._call(self._store.set, keys[self.rank], pickle.dumps(value))
        self._wait_for(keys)
        return [pickle.loads(self._call(self._store.get, key)) for key in keys]

    def _wait_for(self, keys):
        """Returns once every key is set; raises JobLost naming a rank whose key is missing and whose
        heartbeat did not change for the timeout (stopped, frozen, cut off, dead)."""
        start = time.monotonic()
        last_beat = {}   # rank -> (its heartbeat, when it last changed)
        while True:
            missing = [rank for rank, key in enumerate(keys) if not self._call(self._store.check, [key])]
            if not missing:
                return
            now = time.monotonic()
            for rank in missing:
                beat_key = _beat_key(rank)
                beat = self._call(self._store.get, beat_key) if self._call(self._store.check, [beat_key]) else None
                seen, since = last_beat.get(rank, (None, start))
                if beat != seen:
                    last_beat[rank] = beat, now
                elif now - since > self._timeout:
                    self._call(self._store.set, FAILED_KEY, str(self.rank))
                    raise JobLost(f'rank {rank} stopped responding: no heartbeat for {now - since:.0f} s (frozen, '
                                  f'stopped, cut off or dead); giving up ({PEER_TIMEOUT_ENV} sets the wait)')
            time.sleep(min(1.0, self._timeout / 10))

    def _call(self, operation, *args):
        """A store operation; a store that does not answer within the timeout ends the job with one line.

        The operation runs in a thread of its own: a client of a stopped store (its host frozen or cut
        off) waits forever, whatever the store's timeout says.
        """
        outcome = {}

        def call():
            try:
                outcome['result'] = operation(*args)
            except RuntimeError as e:   # torch's DistStoreError (a closed connection, ...)
                outcome['error'] = e

        thread = threading.Thread(target=call, name='store', daemon=True)
        thread.start()
        thread.join(self._timeout)
        if thread.is_alive() or 'error' in outcome:
            problem = _first_line(outcome['error']) if 'error' in outcome else f'no answer for {self._timeout:.0f} s'
            raise JobLost(f'rank {self.rank}: lost the job\'s key-value store at {_store_address()} ({problem}); '
                          'the process hosting it (torchrun on the first node, or rank 0) stopped or was cut off')
        return outcome['result']


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
    text = _first_line(error)
    return f'{type(error).__name__}: {text}' if text else type(error).__name__


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0] if text else ''


def _store_address():
    return f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"


def _beat_key(rank):
    return f'beat/{rank}'


def peer_timeout():
    """Seconds a process waits for a peer whose heartbeat stopped: QDMN_PEER_TIMEOUT, default 5 minutes."""
    text = os.environ.get(PEER_TIMEOUT_ENV)
    if text is None:
        return DEFAULT_PEER_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise UserInputError(f'{PEER_TIMEOUT_ENV}={text}: expected a number of seconds > 0')
    return seconds


class _Heartbeat:
    """Sets beat/<rank> to a new value every `interval` s from a thread, as long as the process runs."""

    def __init__(self, store, rank, interval):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(store, _beat_key(rank), interval),
                                        name='heartbeat', daemon=True)
        self._thread.start()

    def _beat(self, store, key, interval):
        count = 0
        while True:
            try:
                store.set(key, str(count))
            except RuntimeError:
                return   # the store is gone: the main thread says so at its next exchange
            count += 1
            if self._stop.wait(interval):
                return

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=1.0)   # not longer: a set to a stopped store never returns


@contextlib.contextmanager
def _job_store(launch, timeout):
    """The key-value store of the torchrun job (torchrun's own, or rank 0's under the legacy launcher),
    this process beating in it; None without a launcher."""
    if not launch.launched:
        yield None
        return
    try:
        store, _, _ = next(dist.rendezvous('env://', timeout=datetime.timedelta(seconds=timeout)))
    except RuntimeError as e:
        raise JobLost(f'rank {launch.rank}: the job\'s processes did not meet at {_store_address()} within '
                      f'{timeout:.0f} s ({_first_line(e)})') from None
    # keys of an earlier attempt of a restarted job (torchrun --max_restarts) must not count
    store = dist.PrefixStore(f"qdmn-eval/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
    heartbeat = _Heartbeat(store, launch.rank, interval=min(5.0, timeout / 4))
    try:
        yield store
    finally:
        heartbeat.stop()


@contextlib.contextmanager
def eval_processes(device_name, local_rank=None):
    """Yields the EvalGroup of this run, its device chosen; under a launcher, joins the job's store.

    The processes exchange a few small messages through torchrun's key-value
    store (no process group, no collective with a fixed timeout): a process
    waits for the others as long as they beat (util.distributed._Heartbeat)
    and gives up with one line on one whose heartbeat stopped for
    QDMN_PEER_TIMEOUT seconds. On CPU each process gets its share of the
    node's cores (torchrun's own default is one thread per process).
    """
    launch = Launch(local_rank)
    timeout = peer_timeout() if launch.launched else None
    try:
        with _job_store(launch, timeout) as store:
            group = EvalGroup(launch, store, timeout)
            group.device = group.together(lambda: launch.device_for(device_name))[group.rank]
            if launch.launched and group.device.type == 'cpu':
                torch.set_num_threads(cpu_threads_per_process(launch.local_world_size))
            yield group
    except JobLost as e:
        print_error_line(str(e))
        raise SystemExit(1) from None
