"""util/run_settings.py: the record of the settings that made an output, and the refusal to mix settings."""
import pytest

from util.errors import UserInputError
from util.run_settings import (RECORD, check_same_settings, checkpoint_identity, mask_settings, recorded_settings,
                               resume_or_refuse, write_settings)

ENGINE = {'top_k': 50, 'km_sigma': None, 'memory_policy': 'quality', 'mem_freq': 5, 'memory_thr': 20,
          'quality_thr': 0.8}
REMEDY = 'use --overwrite or another --output'


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / 's012.pth'
    path.write_bytes(bytes(range(256)) * 20_000)   # 5 MB: both ends are hashed, the middle not
    return path


def test_checkpoint_identity_follows_the_content_not_the_folder(checkpoint, tmp_path):
    copy = tmp_path / 'elsewhere' / 's012.pth'
    copy.parent.mkdir()
    copy.write_bytes(checkpoint.read_bytes())
    assert checkpoint_identity(str(copy)) == checkpoint_identity(str(checkpoint))
    assert checkpoint_identity(str(checkpoint)).startswith('s012.pth (')
    other = tmp_path / 'other' / 's012.pth'
    other.parent.mkdir()
    other.write_bytes(checkpoint.read_bytes()[:-1] + b'x')
    assert checkpoint_identity(str(other)) != checkpoint_identity(str(checkpoint))
    assert checkpoint_identity('synthetic') == 'synthetic'


def test_same_settings_resume_and_other_settings_refuse_in_one_line(checkpoint, tmp_path):
    out = tmp_path / 'out'
    settings = mask_settings(str(checkpoint), 'fp32', ENGINE, size=480)
    check_same_settings(str(out), settings, results_exist=False, remedy=REMEDY)   # a new output
    write_settings(str(out), settings)
    assert recorded_settings(str(out)) == settings
    check_same_settings(str(out), mask_settings(str(checkpoint), 'fp32', ENGINE, size=480), True, REMEDY)

    changed = mask_settings(str(checkpoint), 'bf16', dict(ENGINE, top_k=20), size=240)
    with pytest.raises(UserInputError) as e:
        check_same_settings(str(out), changed, results_exist=True, remedy=REMEDY)
    assert str(e.value) == (f'{out}: holds results made with other settings (precision fp32 -> bf16; size 480 -> 240; '
                            'top_k 50 -> 20); use --overwrite or another --output')


def test_results_without_a_record_are_refused(tmp_path):
    with pytest.raises(UserInputError) as e:
        check_same_settings(str(tmp_path), {'size': 480}, results_exist=True, remedy=REMEDY)
    assert str(e.value) == (f'{tmp_path}: holds results without a record of their settings ({RECORD}); '
                            'use --overwrite or another --output')


def test_an_unreadable_record_is_one_line(tmp_path):
    (tmp_path / RECORD).write_text('{"size": 4')
    with pytest.raises(UserInputError) as e:
        recorded_settings(str(tmp_path))
    assert str(e.value) == f'{tmp_path / RECORD}: unreadable settings record (delete it, or use another --output)'


def test_resume_or_refuse_for_a_one_run_output(tmp_path):
    out = str(tmp_path / 'out')
    settings = {'size': 480}
    assert resume_or_refuse(out, settings, complete=False, overwrite=False) is False   # nothing yet: run
    write_settings(out, settings)
    assert resume_or_refuse(out, settings, complete=True, overwrite=False) is True    # same: nothing to do
    with pytest.raises(UserInputError, match=r'other settings \(size 480 -> 240\); use --overwrite'):
        resume_or_refuse(out, {'size': 240}, complete=True, overwrite=False)
    assert resume_or_refuse(out, {'size': 240}, complete=True, overwrite=True) is False
    assert recorded_settings(out) is None   # forgotten until the new run completes
