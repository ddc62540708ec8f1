"""Crash-safe file writes: a reader sees the old file or the new one, never a partial one."""
import os
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".partial"


def _current_umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_current_umask()  # what open() would give a new file (mkstemp gives 0600)


def atomic_write(path, write, binary=True):
    """Write a file through `write(file_object)` so that a crash at any moment leaves it whole.

    The data goes to a temporary file in the same folder, which is flushed and fsynced, then
    renamed over `path` (atomic on POSIX), and the folder is fsynced so the rename survives a
    power loss. If `write` raises, the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        os.fchmod(handle, FILE_MODE)
        with os.fdopen(handle, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp_name, path)
    except BaseException:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        raise
    fsync_folder(path.parent)


def fsync_folder(folder):
    """Make a rename or a new file in `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(folder):
    """Delete temporary files left by writes that a crash (e.g. SIGKILL) cut short."""
    for stale in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        try:
            stale.unlink()
        except OSError:
            pass
