"""Fetching the published s012 checkpoint from Google Drive (gdown), verified before use.

The check that a file is a QDMN checkpoint belongs to the network's layer: callers pass it as
`verify` (qdmn.network.verify_checkpoint), so util/ does not import model/.
"""
import os

from util.errors import UserInputError

S012_DRIVE_ID = '1fdiGFGol1ecVowPe6gfRHsRs9zCThFXB'
S012_URL = f'https://drive.google.com/file/d/{S012_DRIVE_ID}/view'
DEFAULT_MODEL = os.path.join('saves', 's012.pth')


def download_s012(verify, path=DEFAULT_MODEL, quiet=False):
    """Downloads s012 to `path` (through a temp file, checked by verify(file), then renamed)."""
    import gdown
    folder = os.path.dirname(path) or '.'
    os.makedirs(folder, exist_ok=True)
    tmp = path + '.download'
    try:
        result = gdown.download(id=S012_DRIVE_ID, output=tmp, quiet=quiet)
    except Exception as e:  # gdown raises requests/its own errors when offline or rate-limited
        result, reason = None, f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'
    else:
        reason = 'gdown returned no file'
    if result is None or not os.path.isfile(tmp):
        if os.path.exists(tmp):
            os.remove(tmp)
        raise UserInputError(
            f'could not download s012 from Google Drive ({reason}). Without internet, fetch it by hand '
            f'from {S012_URL} and save it as {path}')
    try:
        verify(tmp)
    except UserInputError as e:
        os.remove(tmp)
        raise UserInputError(f'the downloaded file is not the s012 checkpoint: {e}') from None
    os.replace(tmp, path)
    return path


def ensure_model(path, verify):
    """Returns `path`; downloads s012 there first (checked by verify(file)) when it is the default
    location and missing."""
    if os.path.isfile(path):
        return path
    if os.path.normpath(path) != os.path.normpath(DEFAULT_MODEL):
        raise UserInputError(f'{path}: checkpoint not found')
    print(f'{path} not found: downloading the published s012 checkpoint')
    return download_s012(verify, path)
