"""The CUDA paths, checked on a CPU-only machine: each test reproduces the way a GPU run fails
(a process group with only a CUDA backend, float16 autocast, a simulated out-of-memory, a
simulated second GPU) and checks the fix (docs/gpu.md)."""
import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image

import segment_video
import train
from inference_core import InferenceCore, propagate
from model import memory_read
from model.memory_read import BLOCK_ELEMENTS, blocked_top_k_read, read_block_size
from model.model import QDMNModel
from model.network import QDMN
from util import device as device_util
from util.device import configure_cuda, local_cuda_index, resolve_device
from util.distributed import Launch, _one_line
from util.errors import UserInputError, run_main
from util.hyper_para import parse_args
from util.image_io import read_label_mask, read_rgb
from util.palette import DAVIS_PALETTE
from util.tensor_util import frame_to_tensor, labels_to_masks

SIMULATED_OOM = ('CUDA out of memory. Tried to allocate 6.00 GiB. GPU 0 has a total capacity of 7.79 GiB of which '
                 '1.21 GiB is free. Including non-PyTorch memory, this process has 6.57 GiB memory in use.')


def pretend_cuda(monkeypatch, devices):
    """This process sees `devices` CUDA devices (device selection only: nothing runs on them)."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: devices > 0)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: devices)
    monkeypatch.setattr(torch.cuda, 'set_device', lambda device: None)


# --- 1. the training report on the CUDA process group ---------------------------------------------

def tiny_batch(size=32):
    torch.manual_seed(0)
    masks = torch.zeros(1, 3, 2, size, size)
    masks[:, :, 0, 4:20, 4:20] = 1
    masks[:, :, 1, 18:30, 10:28] = 1
    cls_gt = torch.zeros(1, 3, size, size, dtype=torch.long)
    cls_gt[masks[:, :, 0] > 0.5] = 1
    cls_gt[masks[:, :, 1] > 0.5] = 2
    return {'rgb': torch.randn(1, 3, 3, size, size), 'masks': masks, 'cls_gt': cls_gt,
            'selector': torch.ones(1, 2)}


def test_training_report_runs_on_the_process_group_of_a_cuda_run(monkeypatch):
    """train.py's process group on a GPU machine, with NCCL replaced by gloo for the same devices:
    NCCL serves CUDA tensors only, so a group with only `cuda:gloo` rejects a CPU tensor as NCCL does
    ("No backend type associated with device type cpu", every GPU run's first report before the fix)."""
    def nccl_as_gloo(backend, **kwargs):
        devices = backend if ':' in backend else {'nccl': 'cuda:nccl', 'gloo': 'cpu:gloo,cuda:gloo'}[backend]
        return init_process_group(devices.replace('nccl', 'gloo'), **kwargs)

    init_process_group = dist.init_process_group
    monkeypatch.setattr(dist, 'init_process_group', nccl_as_gloo)
    monkeypatch.setattr(Launch, 'device_for', lambda self, name: torch.device('cuda', 0))
    monkeypatch.setattr(train, 'configure_cuda', lambda *args, **kwargs: None)
    for name in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK'):
        monkeypatch.delenv(name, raising=False)
    para = parse_args(['--id', 'x', '--stage', '2', '--device', 'cuda'])
    ctx = train.Distributed(para)   # as on a GPU machine
    # the model runs here on the CPU; built before the group, so DDP (whose collectives would be on
    # CPU tensors here, CUDA ones on a GPU) stays out and only the report's all_reduce meets the group
    model = QDMNModel(QDMN(), para, torch.device('cpu')).train()
    ctx.init(para)
    try:
        model.do_pass(tiny_batch(), 0)
        report = model.report()
    finally:
        dist.destroy_process_group()
    assert 0 <= report['iou'] <= 1 and np.isfinite(report['loss'])


# --- 2. fp16: sigmoid and aggregation in fp32 -------------------------------------------------------

def two_halves(size=64):
    labels = np.zeros((size, size), np.uint8)
    labels[:, : size // 2] = 1
    labels[:, size // 2:] = 2
    return labels


def test_fp16_autocast_keeps_two_confident_objects_apart(inference_net, monkeypatch):
    """Object logits 9 and 10 everywhere, both above ~8.3 where fp16's sigmoid is exactly 1.0:
    object 2 must win every pixel, not tie with object 1 (which the lower index would win)."""
    decoder_dtypes = []
    decoder = inference_net.segment_logits

    def confident(readout, f8, f4):
        logits = decoder(readout, f8, f4)
        decoder_dtypes.append(logits.dtype)
        return (torch.tensor([9.0, 10.0]).view(2, 1, 1, 1) + 0 * logits).to(logits.dtype)

    monkeypatch.setattr(inference_net, 'segment_logits', confident)
    rng = np.random.default_rng(0)
    frames = [frame_to_tensor(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(3)]
    with torch.autocast('cpu', dtype=torch.float16):
        labels = list(propagate(InferenceCore(inference_net), iter(frames), labels_to_masks(two_halves(), [1, 2])))
    assert decoder_dtypes and set(decoder_dtypes) == {torch.float16}   # as on CUDA with --amp
    assert all((label_map == 2).all() for label_map in labels[1:])


def run_golden_on(network, golden_dir, clip, device):
    """A golden clip through the DAVIS engine on `device` (under the caller's autocast); returns
    (label maps, golden label maps)."""
    fixture = json.loads((golden_dir / 'fixture.json').read_text())
    frames = sorted((golden_dir / clip / 'frames').glob('*.png'))[:fixture[clip]['frames']]
    labels, _ = read_label_mask(str(golden_dir / clip / 'masks' / '00000.png'))
    core = InferenceCore(network, top_k=fixture['top_k'], mem_freq=fixture['mem_freq'],
                         memory_thr=fixture[clip]['memory_thr'])
    tensors = (frame_to_tensor(read_rgb(str(p)), device) for p in frames)
    masks = np.stack(list(propagate(core, tensors, labels_to_masks(labels, fixture[clip]['objects'], device))))
    return masks, np.load(golden_dir / clip / 'golden.npz')['masks']


def foreground_agreement(masks, golden):
    return ((masks > 0) == (golden > 0)).reshape(len(masks), -1).mean(1)


@pytest.mark.slow
def test_fp16_autocast_keeps_the_golden_foreground(inference_net, shared_dir):
    """bike under float16 autocast (CPU emulates fp16: ~1 min). Its two objects' logits differ by
    < 0.01 with the synthetic weights (tests/test_amp.py), below fp16's resolution, so only
    foreground against background is compared."""
    with torch.autocast('cpu', dtype=torch.float16):
        masks, golden = run_golden_on(inference_net, shared_dir / 'reference' / 'golden', 'bike', 'cpu')
    agreement = foreground_agreement(masks, golden)
    print(f'\nbike fp16 (CPU autocast): foreground agreement per frame {np.round(agreement, 4).tolist()}')
    assert agreement.min() >= 0.99, agreement


# --- 3. the memory read's block size ----------------------------------------------------------------

def test_read_block_size_follows_the_device_and_the_memory_budget():
    cpu, cuda = torch.device('cpu'), torch.device('cuda')
    pixels, memory = 30 * 54, 23 * 30 * 54   # a 480p frame and a full memory, at 1/16 resolution
    assert read_block_size(cpu, pixels, memory, 50, 512) == BLOCK_ELEMENTS // (50 * 512) == 81   # as before
    assert read_block_size(cuda, pixels, memory, 50, 512, budget=2 ** 30) == pixels   # one block per object
    per_pixel = 4 * memory + 50 * (16 + 4 * 512) + 4 * 512
    assert read_block_size(cuda, pixels, memory, 50, 512, budget=100 * per_pixel) == 100   # as many as fit
    assert read_block_size(cuda, pixels, memory, 50, 512, budget=10) == 1


def test_the_block_size_does_not_change_the_read(monkeypatch):
    torch.manual_seed(0)
    mem_key, mem_value = torch.randn(1, 64, 3, 6, 8), torch.randn(1, 32, 3, 6, 8)
    query_key = torch.randn(1, 64, 6, 8)
    small = blocked_top_k_read(mem_key, mem_value, query_key, 10)
    monkeypatch.setattr(memory_read, 'read_block_size', lambda device, pixels, *args: pixels)
    torch.testing.assert_close(blocked_top_k_read(mem_key, mem_value, query_key, 10), small)


# --- 4. out of GPU memory: one line ---------------------------------------------------------------

def write_clip(tmp_path):
    frames = tmp_path / 'frames'
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(frames / f'{i:05d}.png')
    mask = Image.fromarray(two_halves(), mode='P')
    mask.putpalette(DAVIS_PALETTE.reshape(-1).tolist())
    mask.save(tmp_path / 'mask.png')
    return frames, tmp_path / 'mask.png'


def test_cuda_out_of_memory_is_one_line_naming_the_options(synthetic_checkpoint, tmp_path, monkeypatch, capsys):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError(SIMULATED_OOM)

    monkeypatch.setattr('model.network.read_memory', out_of_memory)
    frames, mask = write_clip(tmp_path)
    argv = ['--video', frames, '--mask', mask, '--output', tmp_path / 'out', '--model', synthetic_checkpoint]
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: segment_video.main([str(a) for a in argv + ['--device', 'cpu']]))
    err = capsys.readouterr().err
    assert exit_info.value.code == 1, err
    assert err.count('\n') == 1 and err.startswith('error: CUDA out of memory on GPU 0 (tried to allocate 6.00 GiB)')
    for option in ('--size', '--no_top', '--use_km', '--amp'):
        assert option in err
    assert not (tmp_path / 'out' / 'masks').exists()
    # what the other processes of a torchrun evaluation print about the failed one
    assert _one_line(torch.OutOfMemoryError(SIMULATED_OOM)) == err.removeprefix('error: ').strip()


# --- 5. device choice and CUDA settings -----------------------------------------------------------

def test_a_cuda_index_the_machine_lacks_is_one_line(synthetic_checkpoint, tmp_path, monkeypatch, capsys):
    pretend_cuda(monkeypatch, 2)
    assert resolve_device('cuda:1') == torch.device('cuda', 1)
    with pytest.raises(UserInputError, match=r'--device cuda:5: this process sees 2 CUDA device\(s\) '
                                             r'\(cuda:0 to cuda:1\)'):
        resolve_device('cuda:5')
    frames, mask = write_clip(tmp_path)
    argv = ['--video', frames, '--mask', mask, '--output', tmp_path / 'out', '--model', tmp_path / 'absent.pth']
    with pytest.raises(SystemExit) as exit_info:   # before any model is loaded
        run_main(lambda: segment_video.main([str(a) for a in argv + ['--device', 'cuda:5']]))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == 'error: --device cuda:5: this process sees 2 CUDA device(s) (cuda:0 to cuda:1)\n'


def test_local_rank_maps_to_the_devices_a_process_sees(monkeypatch):
    assert [local_cuda_index(rank, 4) for rank in range(4)] == [0, 1, 2, 3]   # torchrun on a 4-GPU node
    assert local_cuda_index(1, 1) == 0      # each process given its own device (CUDA_VISIBLE_DEVICES per process)
    assert local_cuda_index(2, 2) is None   # more processes than devices
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setenv('RANK', '1')
    monkeypatch.setenv('LOCAL_RANK', '1')
    pretend_cuda(monkeypatch, 1)
    assert Launch().device_for('cuda') == torch.device('cuda', 0)
    monkeypatch.setenv('LOCAL_RANK', '2')
    monkeypatch.setenv('RANK', '2')
    pretend_cuda(monkeypatch, 2)
    with pytest.raises(UserInputError, match='local rank 2.* sees 2'):
        Launch().device_for('cuda')


@pytest.fixture
def cuda_flags():
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark)
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark = saved


def test_tf32_only_with_amp_and_kernel_tuning_only_for_fixed_shapes(cuda_flags):
    cuda = torch.device('cuda')
    configure_cuda(cuda, amp=False, fixed_shapes=False)
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert not torch.backends.cudnn.benchmark
    assert device_util.precision(cuda, amp=False) == 'fp32'   # and it is: no TF32
    configure_cuda(cuda, amp=True, fixed_shapes=True)
    assert torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32   # the read stays fp32
    assert torch.backends.cudnn.benchmark
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    configure_cuda(torch.device('cpu'), amp=False, fixed_shapes=False)
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark) == before   # the CPU changes nothing


def test_youtube_engines_do_not_tune_kernels_per_shape(monkeypatch, synthetic_checkpoint, tmp_path, capsys):
    """Objects labelled on a later frame (segment_video --mask_dir) change the engine's shapes as they join."""
    calls = []
    monkeypatch.setattr(segment_video, 'load_network',
                        lambda path, device, amp, fixed_shapes=True: calls.append(fixed_shapes) or 1 / 0)
    frames, mask = write_clip(tmp_path)
    (tmp_path / 'masks').mkdir()
    (tmp_path / 'masks' / '00000.png').write_bytes(mask.read_bytes())
    (tmp_path / 'masks' / '00002.png').write_bytes(mask.read_bytes())
    for argv in (['--mask', str(mask)], ['--mask_dir', str(tmp_path / 'masks')]):
        with pytest.raises(ZeroDivisionError):
            segment_video.main(['--video', str(frames), *argv, '--output', str(tmp_path / 'out'),
                                '--model', str(synthetic_checkpoint), '--device', 'cpu'])
    assert calls == [True, False]


def test_training_pins_memory_only_for_a_cuda_device(monkeypatch, tmp_path):
    from datasets.training_data import TrainingData
    from test_training import write_static
    write_static(tmp_path / 'static' / 'fss', nested=True)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)   # a GPU machine, training on its CPU
    for device, pinned in (('cpu', False), ('cuda', True)):
        para = parse_args(['--id', 'x', '--stage', '0', '--device', device, '--static_root', str(tmp_path / 'static'),
                           '--static_sets', 'fss', '--batch_size', '1', '--num_workers', '0'])
        assert TrainingData(para, 0, 1).make_loader().pin_memory == pinned
