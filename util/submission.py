"""Zips for the evaluation servers (CodaLab), one writer for every evaluation CLI.

Layouts the servers read: DAVIS test-dev `<sequence>/<frame>.png` at the zip's root;
YouTube-VOS and LVOS `Annotations/<video>/<frame>.png`.
"""
import os
import zipfile

from util.errors import UserInputError
from util.output import atomic_file


def write_submission_zip(output, frames, root=''):
    """Writes <output>.zip holding <root>/<video>/<frame>.png for every {video: [frame names]} of `frames`,
    read from the same paths under `output`. The zip appears whole or not at all. Returns its path."""
    path = output + '.zip'
    arcnames = [f'{root}/{video}/{name}.png' if root else f'{video}/{name}.png'
                for video, names in frames.items() for name in names]
    missing = next((a for a in arcnames if not os.path.isfile(os.path.join(output, a))), None)
    if missing is not None:   # checked first: a write error below means the zip, not its input
        raise UserInputError(f'{os.path.join(output, missing)}: missing, so {path} was not written')
    with atomic_file(path) as tmp:
        with zipfile.ZipFile(tmp, 'w', zipfile.ZIP_STORED) as z:   # PNGs are compressed already
            for arcname in arcnames:
                z.write(os.path.join(output, arcname), arcname)
    return path
