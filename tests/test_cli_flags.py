"""Every CLI's parser: numbers nobody meant are one `error:` line and exit code 2; --help shows every default."""
import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

import eval_davis
import eval_davis_2016
import eval_youtube
import segment_video
import train
from util.cli import HelpFormatter, float_arg, int_arg, short_side_arg, top_k_arg
from util.errors import run_main

CLIS = {'segment_video': segment_video, 'eval_youtube': eval_youtube, 'eval_davis': eval_davis,
        'eval_davis_2016': eval_davis_2016}


def run_cli(module, argv, monkeypatch, capsys):
    """A CLI's main as the command line runs it (sys.argv), so main() with and without argv both work."""
    monkeypatch.setattr(sys, 'argv', [module.__file__] + argv)
    try:
        run_main(module.main)
    except SystemExit as e:
        return e.code, capsys.readouterr().err
    return 0, capsys.readouterr().err


BAD = [
    ('segment_video', ['--size', '-5'], '--size -5: must be an integer >= 32, or -1 (full size)'),
    ('segment_video', ['--size', '0'], '--size 0: must be an integer >= 32, or -1 (full size)'),
    ('segment_video', ['--size', '7'], '--size 7: must be an integer >= 32, or -1 (full size)'),
    ('eval_youtube', ['--size', '7'], '--size 7: must be an integer >= 32, or -1 (full size)'),
    ('segment_video', ['--size', 'big'], '--size big: not an integer'),
    ('segment_video', ['--top_k', '0'], '--top_k 0: must be an integer >= 1, or "none" (read every memory pixel)'),
    ('eval_davis', ['--top_k', '-3'], '--top_k -3: must be an integer >= 1, or "none" (read every memory pixel)'),
    ('eval_youtube', ['--top_k', 'x'], '--top_k x: not an integer or "none"'),
    ('eval_davis', ['--memory_thr', '-1'], '--memory_thr -1: must be an integer >= 0'),
    ('eval_youtube', ['--memory_thr', '-1'], '--memory_thr -1: must be an integer >= 0'),
    ('eval_davis_2016', ['--quality_thr', 'nan'], '--quality_thr nan: must be a finite number'),
    ('eval_youtube', ['--quality_thr', 'inf'], '--quality_thr inf: must be a finite number'),
    ('segment_video', ['--mem_freq', '0'], '--mem_freq 0: must be an integer >= 1'),
    ('eval_davis', ['--mem_freq', '-2'], '--mem_freq -2: must be an integer >= 1'),
    ('segment_video', ['--fps', '0'], '--fps 0: must be a finite number >= 0.1'),
]


@pytest.mark.parametrize('cli, argv, message', BAD, ids=[f'{c} {" ".join(a)}' for c, a, _ in BAD])
def test_bad_number_is_one_line_and_exit_2(cli, argv, message, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(CLIS[cli], argv, monkeypatch, capsys)
    assert (code, err) == (2, f'error: {message}\n')
    assert list(tmp_path.iterdir()) == []


def test_documented_values_pass():
    assert short_side_arg('-1') == -1 and short_side_arg('32') == 32
    assert top_k_arg('none') is None and top_k_arg('None') is None and top_k_arg('1') == 1
    assert int_arg('--memory_thr', 0)('0') == 0
    assert float_arg('--quality_thr')('-1') == -1.0


def parser_of(module, monkeypatch):
    """The ArgumentParser a CLI's main builds (stopped at parse_args)."""
    built = []

    def capture(self, *args, **kwargs):
        built.append(self)
        raise SystemExit(0)
    monkeypatch.setattr(argparse.ArgumentParser, 'parse_args', capture)
    monkeypatch.setattr(sys, 'argv', [module.__file__])
    with pytest.raises(SystemExit):
        module.main()
    return built[0]


def benchmark_inference():
    path = Path(__file__).resolve().parents[1] / 'scripts' / 'benchmark_inference.py'
    spec = importlib.util.spec_from_file_location('benchmark_inference', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('cli', [*CLIS, 'train', 'benchmark_inference'])
def test_help_shows_every_default(cli, monkeypatch):
    module = {'benchmark_inference': benchmark_inference, 'train': lambda: train}.get(cli, lambda: CLIS[cli])()
    parser = parser_of(module, monkeypatch)
    assert parser.formatter_class is HelpFormatter
    formatter = parser.formatter_class('prog')
    silent = [a.option_strings[0] for a in parser._actions
              if a.help != argparse.SUPPRESS and a.default not in (None, argparse.SUPPRESS)
              and not (a.help and ('%(default)' in formatter._get_help_string(a) or 'default' in a.help))]
    assert silent == []


def test_train_help_answers_before_the_heavy_imports():
    start = time.perf_counter()
    result = subprocess.run([sys.executable, 'train.py', '--help'], cwd=Path(train.__file__).parent,
                            capture_output=True, text=True)
    seconds = time.perf_counter() - start
    assert result.returncode == 0 and '--quality_fit' in result.stdout and result.stderr == ''
    assert seconds < 2, f'train.py --help took {seconds:.1f} s'


def test_benchmark_process_times_whole_runs_of_each_checkout(shared_dir):
    script = Path(__file__).resolve().parents[1] / 'scripts' / 'benchmark_process.py'
    davis = shared_dir / 'data' / 'DAVIS-2016-sample'
    result = subprocess.run([sys.executable, str(script), '--davis', str(davis), '--frames', '2', '--rounds', '1'],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    runs = [line for line in result.stdout.splitlines() if line.startswith('round 1')]
    assert [line.split()[2] for line in runs] == ['fp32', 'amp']
    medians = [line for line in result.stdout.splitlines() if line.startswith(('fp32 ', 'amp '))]
    assert len(medians) == 2 and medians[0].split()[3] == 'x1.00'   # fp32 against itself
