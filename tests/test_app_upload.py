"""An uploaded zip of frames is never trusted (util/safe_zip.py)."""
import stat
import zipfile

import pytest

from util.errors import UserInputError
from util.safe_zip import extract_flat


def make_zip(path, entries):
    """entries: (name, bytes) or (ZipInfo, bytes)."""
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            z.writestr(name, data)
    return path


def test_frames_in_a_folder_unpack_flat(tmp_path):
    archive = make_zip(tmp_path / 'f.zip', [('clip/', b''), ('clip/00000.jpg', b'a'), ('clip/00001.jpg', b'b'),
                                            ('__MACOSX/clip/._00000.jpg', b'x')])
    out = extract_flat(archive, tmp_path / 'out')
    assert sorted(p.name for p in out.iterdir()) == ['00000.jpg', '00001.jpg']
    assert (out / '00001.jpg').read_bytes() == b'b'


@pytest.mark.parametrize('name, problem', [('../evil.jpg', "'..'"), ('clip/../../evil.jpg', "'..'"),
                                           ('/etc/evil.jpg', 'absolute'), ('C:/evil.jpg', 'absolute')])
def test_climbing_and_absolute_names_are_refused(tmp_path, name, problem):
    archive = make_zip(tmp_path / 'f.zip', [('00000.jpg', b'a'), (name, b'b')])
    with pytest.raises(UserInputError, match=problem):
        extract_flat(archive, tmp_path / 'out')
    assert not (tmp_path / 'out').exists() and not (tmp_path / 'evil.jpg').exists()


def test_links_are_refused(tmp_path):
    link = zipfile.ZipInfo('00001.jpg')
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = make_zip(tmp_path / 'f.zip', [('00000.jpg', b'a'), (link, b'/etc/passwd')])
    with pytest.raises(UserInputError, match='is a link'):
        extract_flat(archive, tmp_path / 'out')


def test_a_zip_bomb_is_one_message(tmp_path):
    archive = make_zip(tmp_path / 'bomb.zip', [(f'{i:05d}.jpg', bytes(4 << 20)) for i in range(3)])
    assert archive.stat().st_size < 100_000
    with pytest.raises(UserInputError, match=r'bomb.zip: refused: unpacks to 12 MB, more than the limit of 8 MB'):
        extract_flat(archive, tmp_path / 'out', max_bytes=8 << 20)
    assert not (tmp_path / 'out').exists()


def test_too_many_files_and_not_a_zip(tmp_path):
    archive = make_zip(tmp_path / 'f.zip', [(f'{i:05d}.jpg', b'a') for i in range(6)])
    with pytest.raises(UserInputError, match='6 files, more than the limit of 5'):
        extract_flat(archive, tmp_path / 'out', max_files=5)
    (tmp_path / 'x.zip').write_bytes(b'not a zip')
    with pytest.raises(UserInputError, match='x.zip: not a readable zip'):
        extract_flat(tmp_path / 'x.zip', tmp_path / 'out')


def test_two_files_with_one_name_are_refused(tmp_path):
    archive = make_zip(tmp_path / 'f.zip', [('a/00000.jpg', b'a'), ('b/00000.jpg', b'b')])
    with pytest.raises(UserInputError, match="two files named '00000.jpg'"):
        extract_flat(archive, tmp_path / 'out')
