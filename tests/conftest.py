"""Shared fixtures: the read-only ../shared folder and the synthetic checkpoint."""
import os
import sys
from pathlib import Path

# progressbar2 loads its modules lazily and binds the sys.stderr of that moment as a default
# argument: load them now, not inside a capsys test whose stream is closed afterwards
import progressbar.bar  # noqa: F401
import progressbar.fast  # noqa: F401
import pytest
import torch

from util.errors import UserInputError

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('QDMN_SHARED', REPO.parent / 'shared'))
GOLDEN = SHARED / 'reference' / 'golden'

torch.set_num_threads(min(2, os.cpu_count() or 1))


def _weights_module():
    sys.path.insert(0, str(SHARED / 'reference'))
    try:
        import weights
    finally:
        sys.path.pop(0)
    return weights


@pytest.fixture(scope='session')
def shared_dir():
    assert SHARED.is_dir(), f'shared data not found at {SHARED} (set QDMN_SHARED)'
    return SHARED


@pytest.fixture(scope='session')
def synthetic_state_dict(shared_dir):
    return _weights_module().deterministic_state_dict()


@pytest.fixture(scope='session')
def synthetic_checkpoint(synthetic_state_dict, tmp_path_factory):
    """The deterministic multi-object checkpoint written to a temp .pth file."""
    path = tmp_path_factory.mktemp('ckpt') / 'synthetic_s012.pth'
    torch.save(synthetic_state_dict, path)
    return path


def _loaded_network(state_dict):
    from model.network import QDMN
    net = QDMN().eval()
    net.load_state_dict(state_dict, strict=True)
    return net


@pytest.fixture(scope='session')
def network(synthetic_state_dict):
    """The network with the published module layout (what the state dict and module tests need)."""
    return _loaded_network(synthetic_state_dict)


@pytest.fixture(scope='session')
def inference_net(synthetic_state_dict):
    """The fp32 network as the CLIs run it: BatchNorm folded, channels-last (model.inference_mode)."""
    from model.inference_mode import optimize_for_inference
    return optimize_for_inference(_loaded_network(synthetic_state_dict))


@pytest.fixture
def failing_on_call():
    """Wraps a function so that its n-th call raises a UserInputError: a disk that fills up mid-run."""
    def wrap(function, n):
        calls = []

        def failing(*args, **kwargs):
            calls.append(args)
            if len(calls) == n:
                raise UserInputError('disk full (simulated)')
            return function(*args, **kwargs)
        return failing
    return wrap
