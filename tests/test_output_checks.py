"""segment_video.py: the output checked before the model loads, and the settings recorded with it."""
import os
import subprocess

import numpy as np
import pytest
from PIL import Image

import segment_video
from util.errors import run_main


def frames_and_mask(tmp_path):
    frames = tmp_path / 'frames'
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(frames / f'{i:05d}.png')
    mask = tmp_path / 'mask.png'
    Image.fromarray(np.pad(np.full((16, 16), 255, np.uint8), ((8, 8), (16, 16)))).save(mask)
    return frames, mask


def run(argv, capsys):
    try:
        run_main(lambda: segment_video.main([str(a) for a in argv]))
    except SystemExit as e:
        out, err = capsys.readouterr()
        return e.code, out, err
    out, err = capsys.readouterr()
    return 0, out, err


@pytest.mark.parametrize('where', ['below a file', 'read-only'])
def test_an_output_that_cannot_be_written_is_one_line_before_the_model(where, tmp_path, capsys, request):
    frames, mask = frames_and_mask(tmp_path)
    if where == 'below a file':
        (tmp_path / 'file').write_text('')
        out = tmp_path / 'file' / 'out'
    else:
        locked = tmp_path / 'locked'
        locked.mkdir()
        os.chmod(locked, 0o555)
        if os.access(locked, os.W_OK):   # root writes anyway: a read-only mount is what stops root
            if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=16k', 'tmpfs', str(locked)]).returncode:
                pytest.skip('root without mount: no way to make a folder read-only here')
            request.addfinalizer(lambda: subprocess.run(['umount', str(locked)]))
        out = locked / 'out'
    code, _, err = run(['--video', frames, '--mask', mask, '--output', out, '--model', tmp_path / 'absent.pth',
                        '--device', 'cpu'], capsys)
    assert code == 2 and err.startswith(f'error: {out}: output folder is not writable (') and err.count('\n') == 1


def test_a_rerun_with_other_settings_refuses_and_the_same_settings_are_complete(tmp_path, capsys, recwarn):
    frames, mask = frames_and_mask(tmp_path)
    out = tmp_path / 'out'
    argv = ['--video', frames, '--mask', mask, '--output', out, '--model', 'synthetic', '--device', 'cpu']
    assert run(argv, capsys)[0] == 0
    code, stdout, _ = run(argv, capsys)
    assert code == 0 and 'already complete' in stdout
    code, _, err = run(argv + ['--top_k', '20', '--mem_freq', '2'], capsys)
    assert code == 2
    assert err == (f'error: {out}: holds results made with other settings (mem_freq 5 -> 2; top_k 50 -> 20); '
                   'use --overwrite or another --output\n')
    code, stdout, _ = run(argv + ['--top_k', '20', '--overwrite'], capsys)
    assert code == 0 and 'wrote' in stdout
    assert run(argv + ['--top_k', '20'], capsys)[1].count('already complete') == 1
