"""GPU acceptance run (docs/gpu.md): `scripts/check_gpu.sh`, or `python -m pytest -m gpu -s`.

Needs one CUDA device and no download (synthetic weights, the shared golden clips, synthetic
training data); a few minutes. Without CUDA every test here is skipped as "no CUDA device".
"""
import re
import sys

import numpy as np
import pytest
import torch

from model.inference_mode import optimize_for_inference
from model.model import TwoStepPropagation, training_loss
from model.losses import BootstrappedCE
from model.network import QDMN
from test_cuda_readiness import foreground_agreement, run_golden_on, tiny_batch
from test_distributed_eval import free_port, run, small_davis
from test_training import REPO, TRAIN, reported, write_static
from util.device import autocast, configure_cuda

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')]

CUDA = torch.device('cuda', 0)


@pytest.fixture(scope='module')
def cuda_net(synthetic_state_dict):
    net = QDMN().eval()
    net.load_state_dict(synthetic_state_dict)
    return optimize_for_inference(net.to(CUDA))


@pytest.mark.parametrize('amp', [False, True], ids=['fp32', 'fp16'])
@pytest.mark.parametrize('clip', ['bike', 'blackswan'])
def test_golden_clips_on_cuda(cuda_net, shared_dir, clip, amp):
    """fp32 (TF32 off) keeps the labels as the CPU does; fp16 keeps the foreground (bike's two objects
    are closer than fp16 can tell apart with the synthetic weights: tests/test_amp.py)."""
    configure_cuda(CUDA, amp, fixed_shapes=True)
    with autocast(CUDA, amp):
        masks, golden = run_golden_on(cuda_net, shared_dir / 'reference' / 'golden', clip, CUDA)
    labels = (masks == golden).reshape(len(masks), -1).mean(1)
    foreground = foreground_agreement(masks, golden)
    print(f'\n{clip} {"fp16" if amp else "fp32"} on {torch.cuda.get_device_name(CUDA)}: agreement with golden '
          f'labels min {labels.min():.4f} mean {labels.mean():.4f}; foreground min {foreground.min():.4f}')
    assert (foreground if amp else labels).min() >= 0.99


def test_training_step_does_not_wait_for_the_gpu_before_backward():
    """Forward and loss of a training step queue their kernels without a single synchronisation."""
    net = QDMN().to(CUDA).eval()   # as QDMNModel.train(): BatchNorm keeps its statistics
    batch = {k: v.to(CUDA) for k, v in tiny_batch().items()}
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        out = TwoStepPropagation(net)(batch['rgb'], batch['masks'], batch['selector'])
        loss, _ = training_loss(out, batch, 30000, BootstrappedCE(), quality_weight=1.0)
    finally:
        torch.cuda.set_sync_debug_mode('default')
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize('amp', [[], ['--amp']], ids=['fp32', 'fp16'])
def test_nccl_training_runs_past_two_reports(tmp_path, amp):
    """torchrun training on NCCL: two processes on two GPUs; one process on a single GPU (NCCL
    refuses two ranks on one device). Before the fix every run crashed at its first report."""
    processes = min(2, torch.cuda.device_count())
    write_static(tmp_path / 'static' / 'fss', nested=True)
    write_static(tmp_path / 'static' / 'ecssd', nested=False, seed=1)
    code, log = run([sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={processes}',
                     f'--master_port={free_port()}', TRAIN, '--id', 'gpu', '--stage', 0, '--iterations', 3,
                     '--no_imagenet', '--static_root', tmp_path / 'static', '--static_sets', 'fss,ecssd:2',
                     '--saves_root', tmp_path / 'saves', '--size', 64, '--batch_size', 1, '--num_workers', 1,
                     '--log_every', 1, '--image_every', 100, '--device', 'cuda', *amp])
    print(f'\n{processes} NCCL process(es): ' + '; '.join(line for line in log.splitlines() if line.startswith('it ')))
    assert code == 0, log[-4000:]
    assert f'{processes} process(es) on cuda (cpu:gloo,cuda:nccl)' in log
    assert [it for it, _ in reported(log)] == [1, 2, 3]
    assert (tmp_path / 'saves' / 'gpu' / 'gpu_3.pth').is_file()


def test_torchrun_evaluation_equals_one_process(shared_dir, synthetic_checkpoint, tmp_path):
    """Two evaluation processes (on one GPU they share it) write what one process writes. cuDNN picks
    its kernels per process (cudnn.benchmark), so a pixel may round differently: at most 0.1 %."""
    root = small_davis(shared_dir, tmp_path / 'DAVIS')
    outputs = {}
    for processes in (1, 2):
        launcher = [sys.executable]
        if processes > 1:
            launcher += ['-m', 'torch.distributed.run', f'--nproc_per_node={processes}', f'--master_port={free_port()}']
        out = outputs[processes] = tmp_path / f'out{processes}'
        code, log = run(launcher + [REPO / 'eval_davis_2016.py', '--model', synthetic_checkpoint, '--davis', root,
                                    '--output', out, '--device', 'cuda'])
        assert code == 0, log[-3000:]
    pngs = sorted(p.relative_to(outputs[1]) for p in outputs[1].glob('*/*.png'))
    assert pngs and pngs == sorted(p.relative_to(outputs[2]) for p in outputs[2].glob('*/*.png'))
    from util.image_io import read_label_mask
    differing = [np.mean(read_label_mask(str(outputs[1] / p))[0] != read_label_mask(str(outputs[2] / p))[0])
                 for p in pngs]
    print(f'\ntorchrun evaluation vs one process: {sum(d == 0 for d in differing)} of {len(pngs)} frames '
          f'identical, at most {max(differing):.5f} of a frame differs')
    assert max(differing) <= 0.001


def test_inference_benchmark_fps():
    code, log = run([sys.executable, REPO / 'scripts' / 'benchmark_inference.py', '--device', 'cuda',
                     '--frames', 50])
    print('\n' + log)
    assert code == 0, log[-3000:]
    rows = [line.split() for line in log.splitlines() if re.match(r'\s*50\s+(fp32|fp16)\s', line)]
    assert [row[1] for row in rows] == ['fp32', 'fp16'] and all(float(row[2]) > 0 for row in rows)
