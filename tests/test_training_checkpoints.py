"""Checkpoints: resuming the published `<id>_checkpoint.pth`, and saving when training stops early."""
import sys

import pytest
import torch

from model.model import QDMNModel, read_checkpoint
from model.network import QDMN
from util.errors import UserInputError, run_main
from util.hyper_para import parse_args

from test_training import DAVIS_TRAINVAL, YV_TRAIN, write_static, write_vos

# The published PropagationNetwork registers its modules in this order; its Adam state follows it.
PUBLISHED_REGISTRATION = ('mask_rgb_encoder', 'rgb_encoder', 'kv_m_f16', 'kv_q_f16', 'decoder', 'aspp', 'score',
                          'concat_conv')


def run_train(argv, monkeypatch, capsys):
    """train.py's entry point in this process; returns (exit code, stdout + stderr)."""
    import train
    monkeypatch.setattr(sys, 'argv', ['train.py'] + [str(a) for a in argv])
    for name in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK'):
        monkeypatch.delenv(name, raising=False)
    code = 0
    try:
        run_main(train.main)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture(scope='module')
def published_checkpoint(tmp_path_factory):
    """A checkpoint as the published train.py writes it, at iteration 2: no 'stage', DDP's 'module.'
    prefix, plain Adam over the parameters in the published registration order, MultiStepLR."""
    torch.manual_seed(0)
    net = QDMN()
    params = [p for name in PUBLISHED_REGISTRATION for p in getattr(net, name).parameters()]
    assert len(params) == len(list(net.parameters()))
    optimizer = torch.optim.Adam(params, lr=2e-5, weight_decay=1e-7)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [70000], 0.1)
    for _ in range(2):
        for index, p in enumerate(params):
            p.grad = torch.full_like(p, index + 1)   # a first moment that names its parameter
        optimizer.step()
        scheduler.step()
    # Each parameter's first moment, to recognise it after loading.
    moments = {name: optimizer.state[p]['exp_avg'].clone() for name, p in net.named_parameters()}
    path = tmp_path_factory.mktemp('published') / 'published_checkpoint.pth'
    torch.save({'it': 2, 'network': {f'module.{k}': v for k, v in net.state_dict().items()},
                'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict()}, path)
    return path, moments


def test_published_checkpoint_restores_every_parameters_optimiser_state(published_checkpoint):
    path, moments = published_checkpoint
    checkpoint = read_checkpoint(str(path), stage=2)
    model = QDMNModel(QDMN(), parse_args(['--id', 'x', '--stage', '2']), torch.device('cpu'))
    assert model.load_checkpoint(checkpoint) == 2
    for name, p in model.network.named_parameters():
        state = model.optimizer.state[p]
        assert torch.equal(state['exp_avg'], moments[name]), name
        assert float(state['step']) == 2
    assert model.scheduler.last_epoch == 2
    assert all(group['fused'] for group in model.optimizer.param_groups)
    with pytest.raises(UserInputError, match='two-object .* cannot resume it as stage 0'):
        read_checkpoint(str(path), stage=0)


def test_published_checkpoint_resumes_with_stage(published_checkpoint, tmp_path, monkeypatch, capsys):
    path, _ = published_checkpoint
    write_vos(tmp_path.joinpath(*DAVIS_TRAINVAL), davis_layout=True, names=['bear'])
    write_vos(tmp_path.joinpath(*YV_TRAIN), davis_layout=False, names=['v'])
    code, log = run_train(['--id', 'resumed', '--stage', 2, '--load_model', path, '-i', 3, '-b', 1,
                           '--davis_root', tmp_path / 'data' / 'DAVIS', '--davis_subset', 'all',
                           '--yv_root', tmp_path / 'data' / 'YouTube', '--yv_subset', 'all',
                           '--saves_root', tmp_path / 'saves', '--size', 32, '--num_workers', 0,
                           '--device', 'cpu', '--log_every', 1], monkeypatch, capsys)
    assert code == 0, log
    assert f'resumed {path} at iteration 2' in log and 'it 3/3' in log
    final = read_checkpoint(str(tmp_path / 'saves' / 'resumed' / 'resumed_checkpoint.pth'), stage=2)
    assert final['it'] == 3 and final['stage'] == 2
    assert all(float(s['step']) == 3 for s in final['optimizer']['state'].values())


@pytest.fixture
def stage0_args(tmp_path):
    write_static(tmp_path / 'static' / 'one', nested=False, count=2)
    return ['--stage', 0, '--no_imagenet', '--static_root', tmp_path / 'static', '--static_sets', 'one',
            '-b', 1, '-i', 10, '--size', 32, '--num_workers', 0, '--device', 'cpu', '--log_every', 100,
            '--image_every', 100, '--saves_root', tmp_path / 'saves']


def stop_at_second_pass(monkeypatch, error):
    """do_pass succeeds once (without computing anything) and then raises `error`."""
    calls = []

    def do_pass(self, data, it):
        calls.append(it)
        if len(calls) == 2:
            raise error
    monkeypatch.setattr(QDMNModel, 'do_pass', do_pass)


@pytest.mark.parametrize('error, code', [(KeyboardInterrupt(), 130), (FloatingPointError('loss is nan'), None)])
def test_network_is_saved_when_training_stops(stage0_args, tmp_path, monkeypatch, capsys, error, code):
    stop_at_second_pass(monkeypatch, error)
    if code is None:   # an unexpected error keeps its traceback
        with pytest.raises(FloatingPointError):
            run_train(['--id', 'crash'] + stage0_args, monkeypatch, capsys)
        log = capsys.readouterr().out
    else:
        exit_code, log = run_train(['--id', 'crash'] + stage0_args, monkeypatch, capsys)
        assert exit_code == code
    folder = tmp_path / 'saves' / 'crash'
    name = type(error).__name__
    assert (f'training stopped at iteration 1 ({name}): saved {folder / "crash_checkpoint.pth"} and '
            f'{folder / "crash_1.pth"}') in log
    assert read_checkpoint(str(folder / 'crash_checkpoint.pth'), stage=0)['it'] == 1
    assert (folder / 'crash_1.pth').is_file()


def test_debug_run_saves_nothing_when_stopped(stage0_args, tmp_path, monkeypatch, capsys):
    stop_at_second_pass(monkeypatch, KeyboardInterrupt())
    monkeypatch.setattr(QDMNModel, 'report', lambda self: {})      # --debug reports every iteration
    monkeypatch.setattr('util.logger.TrainLogger.images', lambda *args: None)
    code, log = run_train(['--id', 'dbg', '--debug'] + stage0_args, monkeypatch, capsys)
    assert code == 130 and 'training stopped' not in log
    assert not list((tmp_path / 'saves' / 'dbg').glob('*.pth'))
