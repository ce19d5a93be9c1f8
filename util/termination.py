"""SIGTERM ends training at the next iteration boundary, on every process at the same one.

A preempted job and torchrun stopping its workers (a peer died, the agent was told to stop) send
SIGTERM, then SIGKILL after a grace period (torchrun: 30 s). The handler only records the signal;
after each iteration the processes agree (one small all-reduce) whether any of them got it, so all
stop after the same step and rank 0 can save a consistent resumable checkpoint in the grace period.
"""
import contextlib
import signal

import torch
import torch.distributed as dist


class TerminationRequest:
    def __init__(self):
        self.received = 0   # the signal number this process got, 0 if none
        self.agreed = 0     # the signal number on which the processes agreed to stop, 0 if none

    def record(self, signum, frame):
        self.received = signum

    def agree(self):
        """Collective call: whether any process got the signal (CPU tensor: gloo, no wait for a GPU)."""
        flag = torch.tensor([self.received])
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self.agreed = int(flag)
        return self.agreed != 0

    @property
    def name(self):
        return signal.Signals(self.agreed).name

    @property
    def exit_code(self):
        return 128 + self.agreed   # what the shell reports for a process ended by the signal


@contextlib.contextmanager
def termination_requests(signals=(signal.SIGTERM,)):
    """A TerminationRequest recording `signals` while the block runs (the previous handlers come back after)."""
    request = TerminationRequest()
    previous = {s: signal.signal(s, request.record) for s in signals}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
