"""Output folders: one writer per folder, and a run folder that always holds one whole run.

One writer per output
    A job that writes a folder ``OUT`` (``interestflow run``, ``demo``, ``score``, and
    ``report`` writing into its run folder) holds an exclusive lock on the file ``.OUT.lock``
    beside ``OUT`` for as long as it works (:class:`FolderLock`). The lock lives in ``OUT``'s
    parent, not inside ``OUT``, because a run folder is replaced by a rename: a lock inside
    it would leave with the old folder and a second job would lock the new one. It is an OS
    file lock (``fcntl.flock``), which the kernel drops when its process dies, however it
    dies, so a lock left by a killed job is never mistaken for a live one; the file records
    the holder (pid, host, command, start time) only to name it when a second job is refused
    with :class:`FolderLockedError`. The holder deletes the file when it is done; a killed
    holder leaves it behind, harmless, and the next job takes it over.

A run folder is one run
    ``run`` and ``demo`` write a fresh hidden sibling ``.OUT.new-XXXXXXXX``, mark it as a
    complete run (:data:`RUN_MARKER`), and put it in place with one atomic rename that
    exchanges it with the old folder (``renameat2(RENAME_EXCHANGE)`` on Linux); the old run,
    now under the sibling's name, is deleted after (:func:`new_run_dir`). Where the
    exchange is not available (other systems, some network file systems) the old folder is
    renamed aside to ``.OUT.old-PID`` first; a kill between those two renames leaves ``OUT``
    absent and the old run aside, and the next job on ``OUT`` puts it back, under the lock,
    before anything else (:func:`locked_run_dir`). So a kill at any moment leaves the old
    run or the new one, never files of both, and leftover siblings are removed, never read
    as output. An existing ``OUT`` must be empty or a run (:func:`is_run_dir`), and the
    location is checked before any work starts (:func:`check_run_dir`).

For tests only: ``INTERESTFLOW_FAULT=<point>`` makes the process SIGKILL itself at that
point (one of :data:`FAULT_POINTS`), so that a test can stop a job at each step.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import time
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["FAULT_POINTS", "RUN_FORMAT", "RUN_MARKER", "FolderLock", "FolderLockedError",
           "check_location", "check_run_dir", "is_run_dir", "lock_path", "locked_run_dir",
           "new_run_dir"]

#: File that marks a folder as a complete interestflow run (JSON, ``format`` = RUN_FORMAT).
RUN_MARKER = "interestflow-run.json"
RUN_FORMAT = "interestflow.run"
RUN_VERSION = 1
#: Where ``INTERESTFLOW_FAULT`` can stop a job (in order). ``after-move-aside`` is reached
#: only without an atomic exchange.
FAULT_POINTS = ("after-lock", "before-swap", "after-move-aside", "after-swap",
                "after-remove-old")


def _fault(point: str) -> None:
    if os.environ.get("INTERESTFLOW_FAULT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------- the lock
def lock_path(folder) -> Path:
    """The lock file of an output folder: ``.NAME.lock`` beside it.

    Parameters
    ----------
    folder : str or os.PathLike

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> lock_path("/data/run1").as_posix()
    '/data/.run1.lock'
    """
    p = Path(os.path.abspath(os.fspath(folder)))
    return p.parent / f".{p.name}.lock"


class FolderLockedError(ValueError):
    """Another job holds the lock of an output folder.

    Attributes
    ----------
    folder : pathlib.Path
    holder : dict
        What the holder recorded: ``pid``, ``host``, ``command``, ``started`` (may be empty
        when it had not written them yet).
    """

    def __init__(self, folder: Path, holder: dict, what: str = "out"):
        self.folder, self.holder = folder, holder
        who = (f"interestflow {holder.get('command', '?')} (pid {holder.get('pid', '?')} on "
               f"{holder.get('host', '?')}, started {holder.get('started', '?')})"
               if holder else "another process")
        super().__init__(f"{what} {str(folder)!r} is being written by {who}; one job writes a "
                         f"folder at a time: wait for it to finish or pass another folder "
                         f"(lock file {lock_path(folder)})")


def _read_holder(fd: int, wait_s: float = 2.0) -> dict:
    """What the lock's holder recorded. A holder writes it just after taking the lock, so an
    empty or partial record is read again for up to ``wait_s`` (a busy machine can pause the
    holder between the two steps) before the refusal goes out without it."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except (OSError, ValueError):
            data = {}
        if isinstance(data, dict) and data.get("pid") is not None:
            return data
        if time.monotonic() >= deadline:
            return data if isinstance(data, dict) else {}
        time.sleep(0.02)


class FolderLock:
    """Exclusive lock of an output folder, held by one job at a time.

    An OS file lock (``fcntl.flock``) on ``.NAME.lock`` beside the folder
    (:func:`lock_path`); it dies with its process, so there are no stale locks. Refuses
    at once, without waiting, when another job holds it. Not re-entrant: a second
    :class:`FolderLock` of the same folder is refused even in the same process.

    Parameters
    ----------
    folder : str or os.PathLike
        The output folder (need not exist; its parent is created).
    command : str, default "job"
        Recorded in the lock file and shown to a refused job, e.g. ``"score"``.
    what : str, default "out"
        How messages name the folder (``"--out"`` from the command line).

    Raises
    ------
    FolderLockedError
        From :meth:`acquire` (and ``with``) when another job holds the lock.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "scores"
    >>> with FolderLock(out, command="score"):
    ...     try:
    ...         FolderLock(out).acquire()
    ...     except FolderLockedError as e:
    ...         print("refused")
    refused
    """

    def __init__(self, folder, *, command: str = "job", what: str = "out"):
        self.folder = Path(os.path.abspath(os.fspath(folder)))
        self.path = lock_path(self.folder)
        self.command, self.what = command, what
        self._fd = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> "FolderLock":
        """Take the lock or raise :class:`FolderLockedError` naming the holder."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this FolderLock")
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            logger.warning("no fcntl on this platform: %s is not locked", self.folder)
            self._fd = -1
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tries = 10  # a job checking the lock holds it shared for an instant: retry briefly
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except PermissionError as e:
                raise ValueError(f"{self.what} {str(self.folder)!r}: cannot create its lock "
                                 f"file {str(self.path)!r} ({e.strerror}); the folder's "
                                 "parent must be writable") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                tries -= 1
                holder = _read_holder(fd) if tries <= 0 else None
                os.close(fd)
                if tries <= 0:
                    raise FolderLockedError(self.folder, holder, self.what) from None
                time.sleep(0.02)
                continue
            except BaseException:
                os.close(fd)
                raise
            # the holder before us may have deleted the file between our open and our
            # lock: then we locked a file nobody else will open again; start over
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                st = None
            fst = os.fstat(fd)
            if st is not None and (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino):
                break
            os.close(fd)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "folder": str(self.folder)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        _fault("after-lock")
        return self

    def release(self) -> None:
        """Delete the lock file and drop the lock (nothing when not held)."""
        fd, self._fd = self._fd, None
        if fd is None or fd < 0:
            return
        try:
            # deleted while still locked: a job that opened it meanwhile sees that it locked
            # a deleted file and starts over (see acquire)
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _probe_lock(folder: Path, what: str) -> None:
    """Raise FolderLockedError if a live job holds the folder's lock (creates nothing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return
    try:
        fd = os.open(lock_path(folder), os.O_RDONLY)
    except OSError:
        return  # no lock file: nobody holds it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderLockedError(folder, _read_holder(fd), what) from None
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- checks
def check_location(folder, *, what: str = "out") -> Path:
    """Check that an output folder can be written, before any work starts.

    Parameters
    ----------
    folder : str or os.PathLike
    what : str, default "out"
        How messages name the folder (``"--out"`` from the command line).

    Returns
    -------
    pathlib.Path
        The absolute folder path, symbolic links resolved.

    Raises
    ------
    ValueError
        ``folder`` is an existing file, lies under a file, is not writable or cannot be
        created (permissions, read-only file system).
    FolderLockedError
        Another job is writing it.
    """
    path = _check_location(folder, what)
    _probe_lock(path, what)
    return path


def _check_location(folder, what: str) -> Path:
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"{what} must be a folder path, got {type(folder).__name__}")
    path = Path(os.fspath(folder)).resolve()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is an existing file, not a folder; pass a "
                         "folder path")
    if path.parent == path:
        raise ValueError(f"{what} {str(path)!r} is the root of a file system; pass a folder "
                         "in it")
    # written: the folder itself, and its parent (the lock file, the temporary sibling) or,
    # where the parent does not exist yet, the nearest existing folder above it
    base = path.parent
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise ValueError(f"{what} {str(path)!r} cannot be created: {str(base)!r} is a file")
    for d in ([path] if path.is_dir() else []) + [base]:
        if not os.access(d, os.W_OK | os.X_OK):
            raise ValueError(f"{what} {str(path)!r} cannot be written: no write permission "
                             f"in {str(d)!r} (or a read-only file system); pass a folder in "
                             "a writable location")
    return path


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_run_dir(folder) -> bool:
    """Whether ``folder`` holds an interestflow run (``run`` or ``demo`` output).

    A run written by this version carries :data:`RUN_MARKER`; one written before the
    marker existed is recognised by its ``summary.json`` (with the ``outputs`` list and
    ``n_segments`` of ``run``) and its ``model/meta.json``.

    Parameters
    ----------
    folder : str or os.PathLike

    Returns
    -------
    bool
    """
    p = Path(os.fspath(folder))
    marker = _read_json(p / RUN_MARKER)
    if isinstance(marker, dict) and marker.get("format") == RUN_FORMAT:
        return True
    summary = _read_json(p / "summary.json")
    return (isinstance(summary, dict) and isinstance(summary.get("outputs"), list)
            and "n_segments" in summary and (p / "model" / "meta.json").is_file())


def check_run_dir(folder, *, what: str = "out") -> Path:
    """Check that a run folder can be (re)written, before any work starts.

    As :func:`check_location`, and an existing folder must be empty or a previous run
    (:func:`is_run_dir`): it is replaced as a whole, so a folder holding anything else
    is refused rather than deleted.

    Parameters
    ----------
    folder : str or os.PathLike
    what : str, default "out"

    Returns
    -------
    pathlib.Path
        The absolute folder path.

    Raises
    ------
    ValueError
        See :func:`check_location`; or ``folder`` holds files that are not a run, or is a
        mount point (which a rename cannot replace).
    """
    path = _check_location(folder, what)
    _check_run_content(path, what)
    _probe_lock(path, what)
    return path


def _check_run_content(path: Path, what: str) -> None:
    if path.is_dir():
        if os.path.ismount(path):
            raise ValueError(f"{what} {str(path)!r} is a mount point; a run replaces its "
                             "folder by a rename, so pass a folder inside it")
        if not is_run_dir(path) and any(path.iterdir()):
            raise ValueError(f"{what} {str(path)!r} holds files that are not an interestflow "
                             f"run (no {RUN_MARKER} or summary.json with model/); a run "
                             "replaces its whole folder, so pass a new or empty folder, or "
                             "the folder of an earlier run")


# --------------------------------------------------------------------------- the swap
def _siblings(path: Path, kind: str) -> list[Path]:
    """Leftover ``.NAME.new-*`` / ``.NAME.old-*`` folders of ``path`` (exact pattern only,
    so the siblings of a folder named ``NAME.new-x`` are not taken for ``NAME``'s)."""
    pat = re.compile(re.escape(f".{path.name}.{kind}-") + r"[A-Za-z0-9_]+")
    try:
        entries = list(path.parent.iterdir())
    except FileNotFoundError:
        return []
    return sorted((p for p in entries if pat.fullmatch(p.name)),
                  key=lambda p: p.lstat().st_mtime)


def _recover(path: Path) -> None:
    """Undo what a job killed on ``path`` left (call under the lock)."""
    olds = _siblings(path, "old")
    if olds and not os.path.lexists(path):
        # killed between moving the old run aside and moving the new one in
        os.rename(olds[-1], path)
        logger.warning("%s: restored the previous run, left aside by a job that was "
                       "stopped while replacing it", path)
        olds = olds[:-1]
    for p in olds + _siblings(path, "new"):
        shutil.rmtree(p, ignore_errors=True)


@functools.lru_cache(maxsize=1)
def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # libc older than glibc 2.28
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                   ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths; False where the system or file system cannot."""
    fn = _renameat2()
    if fn is None:
        return False
    import ctypes

    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _swap_in(new: Path, path: Path) -> Path | None:
    """Put ``new`` at ``path``; returns where the old run now is (to delete), if any."""
    if not os.path.lexists(path):
        os.rename(new, path)
        return None
    if _exchange(new, path):
        return new
    aside = path.parent / f".{path.name}.old-{os.getpid()}"
    os.rename(path, aside)
    _fault("after-move-aside")
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(aside, path)
        raise
    return aside


@contextlib.contextmanager
def locked_run_dir(folder, *, command: str = "report", what: str = "run_dir"):
    """Hold a run folder's lock, after putting back a run left aside by a killed job.

    For jobs that add to an existing run in place (``interestflow report`` writing
    ``report.html``): no run can replace the folder meanwhile.

    Parameters
    ----------
    folder : str or os.PathLike
    command : str, default "report"
    what : str, default "run_dir"

    Yields
    ------
    pathlib.Path
        The absolute folder path.

    Raises
    ------
    FolderLockedError
        Another job holds the lock.
    """
    path = Path(os.fspath(folder)).resolve()
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    with FolderLock(path, command=command, what=what):
        _recover(path)
        yield path


@contextlib.contextmanager
def new_run_dir(folder, *, command: str = "run", what: str = "out"):
    """Write a run into a fresh folder that replaces ``folder`` as a whole on success.

    Checks the location (:func:`check_run_dir`), takes the lock (:class:`FolderLock`),
    removes what a killed job left, and yields an empty hidden sibling folder. When the
    ``with`` block ends without an error, the sibling is marked (:data:`RUN_MARKER`) and
    swapped in with one atomic rename, and the previous run is deleted; on an error the
    sibling is deleted and ``folder`` is left as it was. A kill at any moment leaves the
    old run or the new one (see the module docstring).

    Parameters
    ----------
    folder : str or os.PathLike
        The run folder: new, empty, or a previous run.
    command : str, default "run"
        Recorded in the lock file and the marker.
    what : str, default "out"
        How messages name the folder.

    Yields
    ------
    pathlib.Path
        The folder to write the run into.

    Raises
    ------
    ValueError
        See :func:`check_run_dir`.
    FolderLockedError
        Another job is writing ``folder``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> for n in (1, 2):
    ...     with new_run_dir(out) as tmp:
    ...         _ = (tmp / f"part{n}.txt").write_text("x")
    >>> sorted(p.name for p in out.iterdir())
    ['interestflow-run.json', 'part2.txt']
    """
    path = check_run_dir(folder, what=what)
    with FolderLock(path, command=command, what=what):
        _recover(path)
        _check_run_content(path, what)  # again, under the lock
        while True:
            tmp = path.parent / f".{path.name}.new-{secrets.token_hex(4)}"
            try:
                tmp.mkdir()
                break
            except FileExistsError:
                continue
        try:
            yield tmp
            marker = {"format": RUN_FORMAT, "version": RUN_VERSION,
                      "run_id": uuid.uuid4().hex, "command": command,
                      "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      "host": socket.gethostname(), "pid": os.getpid()}
            (tmp / RUN_MARKER).write_text(json.dumps(marker, indent=1) + "\n")
            _fault("before-swap")
            old = _swap_in(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fault("after-swap")
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        _fault("after-remove-old")
