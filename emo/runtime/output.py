"""Output files: checked before any work, written atomically, with normal permissions.

Every file the library writes (videos, checkpoints, reports, dataset files) goes through
`atomic_output`: the content is written to a hidden temporary file beside the target and renamed
over it only when complete, so a crash or Ctrl-C never leaves a half-written file, and an
existing file means a finished one (which lets batch queues resume).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def output_path(path, suffixes: tuple[str, ...], option: str = "--out") -> Path:
    """Check an output path before any work: a known suffix, not a folder, and a folder that
    exists and is writable or can be made (its missing folders are created when the file is
    written: only the path's own ancestors, the ones the user named)."""
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise ValueError(f"{option} must end in {' or '.join(suffixes)}, got {out.name!r}")
    if out.is_dir():
        raise ValueError(f"{option} {out} is a folder; give a file name such as {out / ('video' + suffixes[0])}")
    # The missing folders are made when the file is written (`atomic_output`), so a run that
    # fails before then leaves nothing behind; here only check that they can be made.
    existing = out.absolute().parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{option}: cannot create the folder {out.parent}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option}: the folder {existing} is not writable" if existing == out.absolute().parent
                         else f"{option}: cannot create the folder {out.parent}: {existing} is not writable")
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; on success it is renamed to `path`
    with the permissions a normal new file gets (0666 minus the umask, not mkstemp's 0600); on
    any error (or interruption) it is removed and the error goes on."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial" + suffix, dir=path.parent)
    os.close(handle)
    temp = Path(temp_name)
    try:
        yield temp
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
