"""Unpacking an uploaded zip of frames without trusting it.

Any entry whose name climbs out of the destination (`..`), is absolute or is a
link refuses the whole archive; so do more entries or more unpacked bytes
than the caps (a zip bomb is one message, not a full disk). The caps apply to
the sizes in the archive's directory: zipfile never reads more than an
entry's stated size (a lying entry fails its CRC check instead).
"""
import os
import posixpath
import shutil
import stat
import zipfile

from util.errors import UserInputError

CHUNK = 1 << 20


def unsafe_name_problem(name):
    """Why an entry name may not be unpacked, or None when it is a plain relative path."""
    if name.startswith(('/', '\\')) or (len(name) > 1 and name[1] == ':'):
        return 'an absolute path'
    if '..' in name.replace('\\', '/').split('/'):
        return "a '..' component"
    return None


def is_link(info):
    return stat.S_ISLNK(info.external_attr >> 16)


def check_entries(path, infos, max_files, max_bytes):
    """Refuses the archive (UserInputError naming it) before anything is written."""
    for info in infos:
        problem = unsafe_name_problem(info.filename)
        if problem:
            raise UserInputError(f'{path}: refused: entry {info.filename!r} has {problem}')
        if is_link(info):
            raise UserInputError(f'{path}: refused: entry {info.filename!r} is a link')
    files = [i for i in infos if not i.is_dir()]
    if len(files) > max_files:
        raise UserInputError(f'{path}: refused: {len(files)} files, more than the limit of {max_files}')
    declared = sum(i.file_size for i in files)
    if declared > max_bytes:
        raise UserInputError(f'{path}: refused: unpacks to {declared / 2**20:.0f} MB, '
                             f'more than the limit of {max_bytes / 2**20:.0f} MB')


def is_metadata(info):
    """macOS archivers add __MACOSX/ and ._name resource files next to the frames."""
    return info.filename.startswith('__MACOSX/') or posixpath.basename(info.filename).startswith('.')


def extract_flat(path, destination, max_files=10000, max_bytes=2 << 30):
    """Unpacks the files of the zip at `path` into the folder `destination`, flat; returns it.

    Folders inside the archive are dropped (a zip of a frame folder holds
    clip/00000.jpg ...); two files with one name refuse the archive.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise UserInputError(f'{path}: not a readable zip file ({e})') from None
    with archive:
        infos = archive.infolist()
        check_entries(path, infos, max_files, max_bytes)
        os.makedirs(destination, exist_ok=True)
        try:
            for info in infos:
                if info.is_dir() or is_metadata(info):
                    continue
                target = os.path.join(destination, posixpath.basename(info.filename))
                try:
                    with archive.open(info) as source, open(target, 'xb') as out:
                        shutil.copyfileobj(source, out, CHUNK)
                except FileExistsError:
                    raise UserInputError(f'{path}: two files named {posixpath.basename(info.filename)!r}; '
                                         'put the frames of one video in one folder') from None
                except (zipfile.BadZipFile, OSError, EOFError) as e:
                    raise UserInputError(f'{path}: cannot unpack {info.filename!r} ({e})') from None
        except UserInputError:
            shutil.rmtree(destination, ignore_errors=True)
            raise
    return destination
