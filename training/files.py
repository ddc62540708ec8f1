"""Crash-safe file writes (a reader sees the old file or the new one, never a partial one), and
the lock that makes one process at a time the writer of a folder."""
import contextlib
import fcntl
import os
import signal
import socket
import tempfile
import threading
import time
import weakref
from pathlib import Path

TEMP_SUFFIX = ".partial"


_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK  # what open() would give a new file (mkstemp gives 0600)


def atomic_write(path, write, binary=True):
    """Write `path` through `write(file_object)` via a fsynced temporary file renamed over it.
    If `write` raises, `path` is untouched; an `OSError` names `path`, not the temporary file."""
    path = Path(path)
    try:
        handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                             suffix=TEMP_SUFFIX)
    except OSError as error:
        raise _naming(error, path) from None
    try:
        os.fchmod(handle, FILE_MODE)
        with os.fdopen(handle, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp_name, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        if isinstance(error, OSError):
            raise _naming(error, path) from None
        raise
    fsync_folder(path.parent)


def ready_folder(folder, advice):
    """Create `folder` (and its parents) and prove a file can be written in it; else a one-line
    `RunFolderError` giving the reason and ending in `advice`."""
    from xpnn.training.errors import RunFolderError

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe_writable(folder)
    except OSError as error:
        raise RunFolderError(f"cannot write to the run folder {folder}: "
                             f"{error.strerror or error} ({error.filename or folder}); "
                             f"{advice}") from None


def probe_writable(folder):
    """Create and remove a file in `folder`; `OSError` if it cannot."""
    handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
    os.close(handle)
    os.unlink(probe)


def _naming(error, path):
    if error.errno is None:
        return error
    return type(error)(error.errno, error.strerror or os.strerror(error.errno), str(path))


def fsync_folder(folder):
    """Make a rename or a new file in `folder` durable (a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temporaries(folder):
    """Delete the temporary files of writes that a crash cut short."""
    for stale in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        _unlink_quietly(stale)


# -- one writer per folder -------------------------------------------------------------------------

LOCK_NAME = ".xpnn.lock"


class FolderBusyError(RuntimeError):
    """Another process, `holder` ('process 123 on host h'), holds a folder's lock."""

    def __init__(self, folder, holder):
        super().__init__(f"{folder} is in use by {holder}")
        self.folder, self.holder = folder, holder


class _HeldLock:
    """The OS lock (flock) this process holds on one folder's lock file, shared by its handles."""

    def __init__(self, folder, fd, identity):
        self.folder, self.fd, self.identity = folder, fd, identity
        self.handles = 0
        self.created_folder = False
        self.undo_unless = None  # a file whose absence at release means: remove what we wrote
        self.written = []
        self.closed = False

    def drop(self):
        self.handles -= 1
        if self.handles == 0:
            self.release()

    def release(self):
        """Remove what an unfinished start wrote, then the lock file (while still holding the
        lock), then drop the OS lock; a stop signal arriving meanwhile is delivered after."""
        if self.closed:
            return
        with _stop_signals_deferred():
            self.closed = True
            _HELD.pop(self.identity, None)
            try:
                undo = self.undo_unless is not None and not self.undo_unless.exists()
                for path in reversed(self.written) if undo else ():
                    _unlink_quietly(path)
                if _same_file(self.fd, self.folder / LOCK_NAME):
                    _unlink_quietly(self.folder / LOCK_NAME)
                if undo and self.created_folder:
                    with contextlib.suppress(OSError):
                        self.folder.rmdir()  # only if empty: nothing of anyone else's is lost
            finally:
                os.close(self.fd)


@contextlib.contextmanager
def _stop_signals_deferred():
    """SIGINT and SIGTERM held back for the block and delivered when it ends (in the main
    thread; elsewhere a block that changes nothing). A handler records them: a signal mask is
    per thread, and the kernel would hand the signal to a thread that does not block it."""
    arrived = []
    previous = ({number: signal.signal(number, lambda number, frame: arrived.append(number))
                 for number in (signal.SIGINT, signal.SIGTERM)}
                if threading.current_thread() is threading.main_thread() else {})
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        for number in dict.fromkeys(arrived):
            signal.raise_signal(number)


_HELD = {}  # (device, inode) of the folder -> _HeldLock, for the folders this process holds


class FolderLock:
    """A handle on this process's ``flock`` of a folder's LOCK_NAME (holding its pid and host;
    the OS drops it when the process ends). Taking a folder again gives another handle of the
    same lock, dropped with the last; `release()` (or garbage collection) gives one up."""

    def __init__(self, held):
        self._held = held
        held.handles += 1
        self._finalizer = weakref.finalize(self, held.drop)

    @property
    def released(self):
        return not self._finalizer.alive or self._held.closed

    def wrote(self, path):
        """Note that `path` was written under this lock (see `undo_unless`)."""
        self._held.written.append(Path(path))

    def undo_unless(self, path, created_folder=False):
        """At release, if `path` does not exist, remove the files noted by `wrote` (and the
        folder, if it was `created_folder` and is then empty)."""
        self._held.undo_unless = Path(path)
        self._held.created_folder = created_folder

    def release(self):
        self._finalizer()

    @classmethod
    def acquire(cls, folder):
        """Lock the existing `folder` without waiting: `FolderBusyError` when another process
        has it, `OSError` when the lock file cannot be created or locked."""
        folder = Path(folder)
        identity = _identity(folder)
        if identity in _HELD:
            return cls(_HELD[identity])
        path = folder / LOCK_NAME
        for _ in range(20):  # lock files removed under us (by holders that ended): give up
            fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if not _same_file(fd, path):  # its holder removed it as we opened it: again
                    os.close(fd)
                    continue
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            except BlockingIOError:
                os.close(fd)
                raise FolderBusyError(folder, read_holder(path)) from None
            except BaseException:
                os.close(fd)
                raise
            held = _HELD[identity] = _HeldLock(folder, fd, identity)
            return cls(held)
        raise OSError(f"the lock file {path} kept disappearing")

    @staticmethod
    def holder(folder):
        """Who holds the lock of `folder` ('process 123 on host h'), or None when no other
        process does. Creates nothing."""
        folder = Path(folder)
        try:
            if _identity(folder) in _HELD:
                return None
            fd = os.open(folder / LOCK_NAME, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            return read_holder(folder / LOCK_NAME)
        except OSError:
            return None
        finally:
            os.close(fd)


def read_holder(path):
    """'process PID on host HOST' from a lock file (given a new holder 1 s to write it), or
    'another process' when it says nothing readable."""
    deadline = time.monotonic() + 1.0
    while True:
        try:
            words = Path(path).read_bytes()[:200].decode("utf-8", "replace").split()
        except OSError:
            words = []
        if len(words) == 2 and words[0].isdigit():
            return f"process {words[0]} on host {words[1]}"
        if time.monotonic() > deadline:
            return "another process"
        time.sleep(0.02)


def release_all():
    """Give up every folder lock this process holds (at exit: removing what an unfinished start
    wrote)."""
    for held in list(_HELD.values()):
        held.release()


def _identity(folder):
    status = os.stat(folder)
    return status.st_dev, status.st_ino


def _same_file(fd, path):
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def _unlink_quietly(path):
    with contextlib.suppress(OSError):
        os.unlink(path)
