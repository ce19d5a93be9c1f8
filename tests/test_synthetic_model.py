"""--model synthetic: the whole pipeline offline, with neither a checkpoint, the internet nor ../shared."""
import numpy as np
import pytest
import torch
from PIL import Image

import segment_video
import util.download
import util.memory_log
from model.checkpoint import build_network
from util.errors import run_main

WARNING = ('--model synthetic: RANDOM WEIGHTS, NOT A TRAINED MODEL: the masks are meaningless (a dry run of the '
           'pipeline; fetch s012 with scripts/download_model.py for real results)')


def test_synthetic_weights_are_fixed_and_leave_the_random_state_alone():
    state = torch.random.get_rng_state()
    with pytest.warns(UserWarning) as warned:
        first, second = build_network('synthetic'), build_network('synthetic')
    assert str(warned[0].message) == WARNING
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    assert not first.training


def test_segment_video_dry_run_offline(tmp_path, monkeypatch, capsys):
    def no_internet(*args, **kwargs):
        raise AssertionError('--model synthetic must not download anything')
    monkeypatch.setattr(util.download, 'download_s012', no_internet)
    monkeypatch.chdir(tmp_path)   # no saves/, no ../shared
    frames = tmp_path / 'frames'
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(frames / f'{i:05d}.png')
    mask = tmp_path / 'mask.png'
    Image.fromarray(np.pad(np.full((16, 16), 255, np.uint8), ((8, 8), (16, 16)))).save(mask)   # binary 0/255
    titles = []

    def plot(log, path, title):
        titles.append(title)
        open(path, 'wb').close()
    monkeypatch.setattr(util.memory_log, 'plot_memory_log', plot)
    argv = ['--video', 'frames', '--mask', 'mask.png', '--output', 'out', '--model', 'synthetic', '--device', 'cpu',
            '--save_memory_log']
    with pytest.warns(UserWarning) as warned:
        run_main(lambda: segment_video.main(argv))
    assert WARNING in [str(w.message) for w in warned]
    stdout, _ = capsys.readouterr()
    assert 'wrote out/masks/<frame>.png and out/overlay.mp4' in stdout
    assert sorted(p.name for p in (tmp_path / 'out' / 'masks').iterdir()) == ['00000.png', '00001.png', '00002.png']
    assert not (tmp_path / 'saves').exists()
    assert titles == ['frames']   # the memory-log plot is titled with the video's name


def test_the_api_loads_the_synthetic_network_offline(monkeypatch):
    import qdmn
    monkeypatch.setattr(util.download, 'download_s012', lambda *a, **k: pytest.fail('downloaded'))
    with pytest.warns(UserWarning, match='RANDOM WEIGHTS'):
        net = qdmn.load_network('synthetic', device='cpu')
    assert net.precision == 'fp32' and net.device.type == 'cpu'
