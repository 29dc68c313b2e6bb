"""The run directory of one emulation: ipc socket files, logs, lock and state.

Layout (see docs/design.md, "Run directory")::

    $NETEMU_RUN_DIR or /tmp/netemu-$UID/      the base, mode 0700
        <emulation name>/                     one per running emulation, mode 0700
            lock                              flock'ed by the live supervisor; holds its PID
            state.json                        name, supervisor pid, topology, processes
            log/<process>.log                 stdout+stderr of every process
            <process>.ctl, <segment>.data     ipc socket files

`$NETEMU_RUN_DIR` names the *base*, so several emulations can live side by
side under it by name, and `list_emulations()` can find them all.

Liveness is an `flock` on the lock file, not a PID check: the kernel drops
the lock the moment the supervisor dies (even by SIGKILL), and a recycled PID
can never make a dead emulation look alive. The PID in the file is for
people and for `netemu down`.

Unix socket paths are limited to 107 bytes (`sun_path` is 108 with the NUL),
so endpoints are checked here, where a too-long path can still be explained.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

IPC_PATH_MAX = 107
# Room kept for "/<process name>.<suffix>" when a run directory is created,
# so an emulation does not fail half-way through binding its endpoints.
IPC_NAME_ROOM = 24
LOCK_FILE = "lock"
STATE_FILE = "state.json"
LOG_DIR = "log"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class RunDirError(RuntimeError):
    """The run directory cannot be used (bad name, path too long, wrong owner...)."""


class EmulationRunning(RunDirError):
    """A live supervisor already owns the run directory of this emulation name."""

    def __init__(self, name: str, path: Path, pid: int | None) -> None:
        who = f"supervisor pid {pid}" if pid else "a live supervisor"
        super().__init__(f"emulation {name!r} is already running ({who}, {path}); "
                         f"stop it with `netemu down {name}` or pick another name")
        self.name = name
        self.path = path
        self.pid = pid


def run_base() -> Path:
    """The directory under which every emulation has its run directory."""
    configured = os.environ.get("NETEMU_RUN_DIR")
    if configured:
        return Path(configured)
    return Path(f"/tmp/netemu-{os.getuid()}")


def check_name(name: str, what: str = "emulation") -> str:
    """Return `name` if it is usable as a file name in the run directory, else raise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RunDirError(f"invalid {what} name {name!r}: use letters, digits, '_', '.', '-' "
                          "(at most 64, not starting with a dot or dash)")
    return name


def check_ipc_path(path: str | os.PathLike[str]) -> str:
    """Return `path` as str if it fits in a Unix socket address, else raise RunDirError."""
    text = os.fspath(path)
    size = len(os.fsencode(text))
    if size > IPC_PATH_MAX:
        raise RunDirError(f"ipc socket path is {size} bytes, the limit is {IPC_PATH_MAX}: {text}; "
                          "set NETEMU_RUN_DIR to a shorter directory or use shorter names")
    return text


def _make_private_dir(path: Path, *, enforce: bool) -> None:
    """Create `path` with mode 0700; when `enforce`, an existing one must be ours and private."""
    try:
        path.mkdir(mode=0o700, parents=False)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
        return
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise RunDirError(f"{path} exists and is not a directory")
    if enforce:
        if info.st_uid != os.getuid():
            raise RunDirError(f"{path} belongs to uid {info.st_uid}, not to us: refusing to use it")
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.chmod(path, 0o700)


def _ensure_base(base: Path) -> None:
    # The default base lives in world-writable /tmp: it must be ours and private.
    # A base the user chose may already exist (e.g. a tmpfs); it is left as it is.
    default = base == Path(f"/tmp/netemu-{os.getuid()}")
    if not base.exists():
        base.parent.mkdir(parents=True, exist_ok=True)
    _make_private_dir(base, enforce=default)


def _process_matches(pid: int, create_time: float | None) -> psutil.Process | None:
    """The live process `pid` if it is the one started at `create_time` (PIDs get recycled)."""
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.05:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def process_identity(pid: int) -> dict[str, Any]:
    """`{"pid", "create_time"}` for the state file, so a later cleanup kills only this process."""
    try:
        return {"pid": pid, "create_time": psutil.Process(pid).create_time()}
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return {"pid": pid, "create_time": None}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _lock_held(lock_path: Path) -> bool:
    """True if some open file description holds the flock on `lock_path`."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)  # closing also drops the probe's own shared lock
    return False


def _kill_recorded_processes(state: dict[str, Any]) -> list[int]:
    """SIGKILL what a dead supervisor's state file lists, if still alive; return any that survive."""
    records = [state.get("zygote") or {}] + list((state.get("processes") or {}).values())
    killed = []
    for record in records:
        pid = record.get("pid") if isinstance(record, dict) else None
        if not isinstance(pid, int) or pid <= 1 or pid == os.getpid() or record.get("machine") is not None:
            continue  # a process of a cluster's machine is its agent's to stop (`netemu down` asks Ray)
        proc = _process_matches(pid, record.get("create_time"))
        if proc is not None:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGKILL)
                killed.append(proc)
    deadline = time.monotonic() + 2.0
    while killed and time.monotonic() < deadline:
        # A zombie is dead enough: an orphan's waits for init, which may never reap it.
        killed = [proc for proc in killed if _process_matches(proc.pid, None) is not None]
        if killed:
            time.sleep(0.01)
    return [proc.pid for proc in killed]


def _clear_directory(path: Path, keep: set[str]) -> None:
    for entry in os.scandir(path):
        if entry.name in keep:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


class RunDir:
    """An emulation's run directory, owned (locked) by this process until `release()`."""

    def __init__(self, name: str, path: Path, lock_fd: int, stale_cleaned: bool) -> None:
        self.name = name
        self.path = path
        self.log_dir = path / LOG_DIR
        self.stale_cleaned = stale_cleaned  # True if a dead emulation's leftovers were removed
        self._lock_fd: int | None = lock_fd

    @classmethod
    def acquire(cls, name: str, base: str | os.PathLike[str] | None = None,
                path: str | os.PathLike[str] | None = None) -> RunDir:
        """Create and lock the run directory of emulation `name`.

        Raises EmulationRunning if a live supervisor owns it; a stale one left by
        a dead supervisor is cleaned (its recorded processes killed) and reused.
        `path` overrides the default `<base>/<name>` location.
        """
        check_name(name)
        if path is None:
            root = Path(base) if base is not None else run_base()
            _ensure_base(root)
            target = root / name
        else:
            target = Path(path)
            _ensure_base(target.parent)
        target = target.absolute()
        if len(os.fsencode(str(target))) + 1 + IPC_NAME_ROOM > IPC_PATH_MAX:
            raise RunDirError(f"run directory {target} is too long for ipc socket paths "
                              f"(keep it under {IPC_PATH_MAX - 1 - IPC_NAME_ROOM} bytes): "
                              "set NETEMU_RUN_DIR to a shorter directory or use a shorter name")
        lock_fd = cls._lock(name, target)
        try:
            stale = cls._clean_stale(target)
            os.ftruncate(lock_fd, 0)
            me = process_identity(os.getpid())
            os.pwrite(lock_fd, json.dumps(me).encode() + b"\n", 0)
            _make_private_dir(target / LOG_DIR, enforce=True)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(name, target, lock_fd, stale)

    @staticmethod
    def _lock(name: str, target: Path) -> int:
        lock_path = target / LOCK_FILE
        for _ in range(20):
            _make_private_dir(target, enforce=True)  # a releasing owner may have just removed it
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                owner = _read_json(lock_path) or {}
                pid = owner.get("pid") if isinstance(owner.get("pid"), int) else None
                raise EmulationRunning(name, target, pid) from None
            # The previous owner may have unlinked the file between our open and
            # our flock: then we hold a lock nobody else can see. Retry on the new file.
            try:
                if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)
        raise RunDirError(f"could not lock {lock_path}: it keeps changing")

    @staticmethod
    def _clean_stale(target: Path) -> bool:
        """Remove what a dead supervisor left behind; True if there was anything."""
        leftovers = [entry.name for entry in os.scandir(target) if entry.name != LOCK_FILE]
        if not leftovers:
            return False
        state = _read_json(target / STATE_FILE)
        if state is not None:
            _kill_recorded_processes(state)
        from .program_guard import stop_registered   # programs its netemu exec/guards left running
        stop_registered(str(target))
        _clear_directory(target, keep={LOCK_FILE})
        return True

    @property
    def locked(self) -> bool:
        """True until `release()`."""
        return self._lock_fd is not None

    def log_path(self, process: str) -> Path:
        """Where the stdout/stderr of `process` go."""
        return self.log_dir / f"{process}.log"

    def ipc_path(self, filename: str) -> str:
        """The path of an ipc socket file in this run directory, length-checked."""
        return check_ipc_path(self.path / filename)

    def ipc_endpoint(self, filename: str) -> str:
        """A ZeroMQ `ipc://` endpoint for a socket file in this run directory."""
        return "ipc://" + self.ipc_path(filename)

    def write_state(self, state: dict[str, Any]) -> None:
        """Replace state.json atomically (readers never see half a file)."""
        tmp = self.path / f".{STATE_FILE}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(state, handle, indent=1, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, self.path / STATE_FILE)

    def read_state(self) -> dict[str, Any] | None:
        """The last state written, or None."""
        return _read_json(self.path / STATE_FILE)

    def release(self, keep_logs: bool = False) -> None:
        """Remove the run directory (or everything but the logs) and drop the lock."""
        if self._lock_fd is None:
            return
        try:
            if keep_logs:
                _clear_directory(self.path, keep={LOCK_FILE, LOG_DIR})
            else:
                _clear_directory(self.path, keep={LOCK_FILE})
            # Unlink while still holding the lock: a newcomer that opened the old
            # file notices the inode changed (see _lock) instead of sharing it.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path / LOCK_FILE)
            if not keep_logs:
                with contextlib.suppress(OSError):
                    self.path.rmdir()
        finally:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __repr__(self) -> str:
        return f"RunDir({self.name!r}, {str(self.path)!r}, locked={self.locked})"


@dataclass(frozen=True, slots=True)
class EmulationInfo:
    """One emulation found under the run base: live, stale (its supervisor died), or only kept logs."""

    name: str
    path: Path
    supervisor_pid: int | None
    alive: bool
    state: dict[str, Any] | None
    # Not alive, but a lock file or state.json is left: the supervisor died
    # without tearing down (a stopped emulation leaves at most its log/ dir).
    stale: bool = False

    @property
    def status(self) -> str:
        """`running`, `STALE` or `stopped` (a run directory kept only for its logs)."""
        return "running" if self.alive else "STALE" if self.stale else "stopped"

    def live_processes(self) -> list[int]:
        """Pids of the processes its state file records (zygote included) that still run."""
        if self.state is None:
            return []
        records = [self.state.get("zygote") or {}] + list((self.state.get("processes") or {}).values())
        alive = []
        for record in records:
            pid = record.get("pid") if isinstance(record, dict) else None
            if isinstance(pid, int) and pid > 1 and pid != os.getpid() \
                    and _process_matches(pid, record.get("create_time")) is not None:
                alive.append(pid)
        return alive


def read_log_tail(path: str | os.PathLike[str], lines: int = 20) -> list[str]:
    """The last `lines` lines of a log file (empty if there is none), for crash reports."""
    try:
        with open(path, "rb") as handle:
            start = max(0, handle.seek(0, os.SEEK_END) - 64 * 1024)
            handle.seek(start)
            text = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []
    if start > 0 and text:
        text = text[1:]  # cut mid-line
    return text[-lines:]


def list_emulations(base: str | os.PathLike[str] | None = None) -> list[EmulationInfo]:
    """Every emulation directory under the base, sorted by name (for `status`/`down`)."""
    root = Path(base) if base is not None else run_base()
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False) or not _NAME.fullmatch(entry.name):
            continue
        path = Path(entry.path)
        lock_path = path / LOCK_FILE
        owner = _read_json(lock_path) or {}
        pid = owner.get("pid") if isinstance(owner.get("pid"), int) else None
        state = _read_json(path / STATE_FILE)
        alive = _lock_held(lock_path)
        stale = not alive and (state is not None or lock_path.exists())
        found.append(EmulationInfo(entry.name, path, pid, alive, state, stale))
    return found


def remove_run_dir(info: EmulationInfo) -> bool:
    """Kill what a dead emulation's state file records, and remove its run directory.

    False if a live supervisor owns the directory (it came back under that name).
    """
    try:
        run_dir = RunDir.acquire(info.name, path=info.path)  # kills the recorded processes
    except EmulationRunning:
        return False
    run_dir.release()
    return True


def sweep_stale(base: str | os.PathLike[str] | None = None) -> list[EmulationInfo]:
    """Remove every stale run directory whose processes are all gone; the ones removed.

    A stale directory where a recorded process still runs is left for
    `netemu down NAME` (or `--all`), which kills it first.
    """
    removed = []
    for info in list_emulations(base):
        if info.stale and not info.live_processes() and remove_run_dir(info):
            removed.append(info)
    return removed


def wait_unlocked(path: str | os.PathLike[str], timeout: float) -> bool:
    """Wait until nobody holds the lock of run directory `path`; True if that happened."""
    deadline = time.monotonic() + timeout
    lock_path = Path(path) / LOCK_FILE
    while _lock_held(lock_path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True
