"""Programs on a node of another machine: the agent's side of `netemu exec`/`attach`/`node.exec()`.

Before changing this file, read control/programs.py (how a program is started on a
node: the trap, its namespaces, its record) and docs/programs.md ("On a node of
another machine").

In a cluster emulation (docs/cluster.md) a node may run on a machine whose unix
sockets the controller cannot reach. The host agent of that machine
(control/cluster_agent.py) holds an `ExecRelay`: it starts the program there exactly
as `node.exec()` does on one machine (`ProgramTable`: the node's stack, hosts file,
hostname, the guard and the run directory's `programs/` record, so teardown stops it
and a killed agent leaves no orphan), and relays its stdio through plain method calls
(bytes, ints, dicts: what Ray pickles cheaply):

    start(node, argv, ...)                      -> {"id", "pid", "args"}
    io(id, stdin_data, stdin_eof, wait, read)   -> output so far, EOFs, returncode
    signal(id, sig) / resize(id, rows, cols) / close(id) / stop_all()

Output is read by one pump thread (a selector over every program's pipes, pty masters
and pidfds) into bounded buffers: a full buffer is not read until `io` drains it, so a
program that writes faster than the controller reads blocks in write(), as it would on
a pipe. `io` long-polls at most MAX_WAIT seconds, so a thread of the agent (a threaded
Ray actor) is never held longer. Expected failures (command not found, node unknown,
program gone) come back as `{"error": ...}` replies rather than exceptions, which Ray
would wrap (`error_reply`/`raise_reply`); the controller's `RemoteProcess`
(control/remote_exec_process.py) raises them as Popen would.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import selectors
import shutil
import struct
import subprocess
import termios
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from .programs import NodeSite, Program, ProgramError, ProgramTable, attach_argv

MAX_BUFFER = 1 << 20        # output bytes held per stream before the program's writes block
MAX_CHUNK = 1 << 20         # bytes of one stream handed out by one io()
STDIN_LIMIT = 1 << 20       # stdin bytes held for the program before io(read=False) waits
MAX_WAIT = 1.0              # io's long poll never holds the caller's thread longer
READ_SIZE = 1 << 16
ENDED_KEPT = 4096           # returncodes of closed programs kept for a late io()
STOP_GRACE = 1.0            # close(): SIGTERM, then SIGKILL after this (control/program_guard.py)

_ERRORS: dict[str, type[BaseException]] = {
    "FileNotFoundError": FileNotFoundError, "PermissionError": PermissionError, "OSError": OSError,
    "ProgramError": ProgramError, "LookupError": LookupError, "ValueError": ValueError, "TypeError": TypeError,
}


def error_reply(error: BaseException) -> dict[str, Any]:
    """An expected failure as plain data: its type's name, errno, message and filename."""
    kind = type(error).__name__
    if kind not in _ERRORS:
        kind = "OSError" if isinstance(error, OSError) else "LookupError" if isinstance(error, LookupError) \
            else "ValueError"
    if isinstance(error, OSError):
        return {"error": kind, "errno": error.errno, "message": error.strerror or str(error),
                "filename": error.filename}
    return {"error": kind, "errno": None, "message": str(error.args[0]) if error.args else str(error),
            "filename": None}


def raise_reply(reply: Any) -> Any:
    """`reply` itself, or the exception an `{"error": ...}` reply stands for (FileNotFoundError...)."""
    if not isinstance(reply, dict) or "error" not in reply:
        return reply
    kind = _ERRORS.get(reply["error"], RuntimeError)
    if issubclass(kind, OSError) and reply.get("errno") is not None:
        if reply.get("filename") is not None:
            raise kind(reply["errno"], reply["message"], reply["filename"])
        raise kind(reply["errno"], reply["message"])
    raise kind(reply.get("message", ""))


def _replying(method: Callable[..., Any]) -> Callable[..., Any]:
    """Expected failures of a relay method become an error reply (plain data) instead of an exception."""
    def wrapper(self: "ExecRelay", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (OSError, ProgramError, LookupError, ValueError, TypeError) as error:
            return error_reply(error)
    wrapper.__name__, wrapper.__doc__ = method.__name__, method.__doc__
    return wrapper


@dataclass(eq=False)
class _Stream:
    """One output of a program (stdout, stderr, or a pty master): our read end and what it gave."""

    fd: int | None                  # None: not captured (DEVNULL, merged, closed)
    buffer: bytearray = field(default_factory=bytearray)
    eof: bool = False

    def delivered(self) -> bool:
        return self.eof and not self.buffer


@dataclass(eq=False)
class _Job:
    """A program the relay runs: its Program, our ends of its stdio, what the controller has seen."""

    id: int
    program: Program
    stdout: _Stream
    stderr: _Stream
    stdin_fd: int | None            # a pipe's write end, or the pty master (shared with stdout)
    master: int | None              # the pty master, when the program has a terminal
    pidfd: int | None
    pending: bytearray = field(default_factory=bytearray)
    stdin_eof: bool = False          # the controller's stdin ended: close the pipe once pending is written
    stdin_closed: bool = False       # the program's stdin is closed (EOF sent, or EPIPE)
    returncode: int | None = None
    exited: bool = False             # its pidfd said so (the returncode may wait for another thread's reaping)
    reported: tuple = ()
    closed: bool = False             # close()d: the pump releases its fds

    def state(self) -> tuple:
        if self.exited and self.returncode is None:
            self.returncode = self.program.popen.poll()
        return (self.returncode, self.stdout.delivered(), self.stderr.delivered(), self.stdin_closed)


class ExecRelay:
    """Runs programs on the nodes of this machine for a controller elsewhere and relays their stdio.

    `emulation`: the emulation's name (NETEMU_EMULATION of programs). `run_dir`: this
    machine's run directory (its <node>.sys syscall sockets, `hosts`, `programs/`).
    `nodes`: the node names spawned here (None: any name; others are refused).
    `controls`: node -> its control endpoint, for NETEMU_CONTROL (the node's tools: ip, ss),
    when it is not the run directory's ipc://<run_dir>/<node>.ctl. `node_alive(node)`:
    whether the node's kernel process runs (while not, the relay answers its programs'
    calls with ENETDOWN: control/program_down.py); default: always. `programs`: the
    ProgramTable that starts them (default: a new one; the unit tests give one without the trap).
    Thread-safe: every method may be called from any thread, concurrently.
    """

    def __init__(self, emulation: str, run_dir: str, nodes: Iterable[str] | None = None,
                 controls: Mapping[str, str] | None = None, node_alive: Callable[[str], bool] | None = None,
                 max_buffer: int = MAX_BUFFER, programs: ProgramTable | None = None) -> None:
        self.emulation = emulation
        self.run_dir = str(run_dir)
        self.nodes = None if nodes is None else set(nodes)
        self.controls = dict(controls or {})
        self.max_buffer = max_buffer
        self._table = programs or ProgramTable(node_alive or (lambda node: True))
        self._jobs: dict[int, _Job] = {}
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._pump: threading.Thread | None = None
        self._closing: list[_Job] = []          # closed jobs whose fds the pump releases
        self._ended: dict[int, int | None] = {}  # id -> returncode of closed jobs (the last ENDED_KEPT)
        self._stopping = False

    # -- the calls ------------------------------------------------------------------------------

    @_replying
    def start(self, node: str, argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None,
              assignments: Mapping[str, str] | None = None, cwd: str | None = None, stdin: bool = True,
              stdout: bool = True, stderr: bool | str = True, pty: bool = False, rows: int = 24, cols: int = 80,
              shell: str | None = None) -> dict[str, Any]:
        """Start `argv` on `node` (None: the node's shell, as `netemu attach`): {"id", "pid", "args"}.

        `env` replaces this process's environment as the base (as Popen's does); the
        node's variables, then `assignments`, go on top. stdin/stdout/stderr: True = a
        pipe relayed by `io`, False = /dev/null; stderr="stdout" merges it into stdout.
        `pty`: the program gets a new terminal (rows x cols) as stdin, stdout and stderr,
        and it is its session's controlling terminal (a shell does job control on it).
        `shell`: the shell for argv=None (falls back to $SHELL here, then bash).
        """
        if self._stopping:
            raise ProgramError(f"{self.emulation}: this machine's programs are being stopped")
        if self.nodes is not None and node not in self.nodes:
            raise LookupError(f"{self.emulation} has no node {node!r} on this machine "
                              f"(nodes here: {', '.join(sorted(self.nodes))})")
        site = NodeSite(self.emulation, node, self.run_dir)
        variables = {"NETEMU_CONTROL": self.controls[node]} if node in self.controls else {}
        if argv is None:
            argv, extra = attach_argv(site, interactive=pty, shell=self._shell(shell))
            variables.update(extra)
        variables.update(assignments or {})
        argv = [str(word) for word in argv]
        master = slave = None
        if pty:
            master, slave = os.openpty()
            _set_size(slave, rows, cols)
            stdio: dict[str, Any] = {"stdin": slave, "stdout": slave, "stderr": slave, "start_new_session": True,
                                     "preexec_fn": _take_terminal}
        else:
            stdio = {"stdin": subprocess.PIPE if stdin else subprocess.DEVNULL,
                     "stdout": subprocess.PIPE if stdout else subprocess.DEVNULL,
                     "stderr": subprocess.STDOUT if stderr == "stdout" else
                     subprocess.PIPE if stderr else subprocess.DEVNULL}
        try:
            # foreground: SIGINT/SIGQUIT back to their defaults in the program (the agent may ignore them,
            # and a shell cannot catch what it was started ignoring: POSIX sh, "trap")
            program = self._table.start(site, argv, env=env, assignments=variables, cwd=cwd, foreground=True,
                                        **stdio)
        except BaseException:
            for fd in (master, slave):
                if fd is not None:
                    os.close(fd)
            raise
        popen = program.popen
        if slave is not None:
            os.close(slave)
            job = _Job(0, program, _Stream(master), _Stream(None, eof=True), master, master, None)
        else:
            job = _Job(0, program, _Stream(popen.stdout.fileno() if popen.stdout else None,
                                           eof=popen.stdout is None),
                       _Stream(popen.stderr.fileno() if popen.stderr else None, eof=popen.stderr is None),
                       popen.stdin.fileno() if popen.stdin else None, None, None, stdin_closed=popen.stdin is None)
        for fd in {job.stdout.fd, job.stderr.fd, job.stdin_fd} - {None}:
            os.set_blocking(fd, False)
        try:
            job.pidfd = os.pidfd_open(popen.pid)
        except OSError:             # already reaped by a sweep of the table: it has ended
            job.returncode = popen.poll()
        with self._cond:
            job.id = next(self._ids)
            self._jobs[job.id] = job
            if self._pump is None:
                self._pump = threading.Thread(target=self._run_pump, name="exec-relay", daemon=True)
                self._pump.start()
        self._wake()
        return {"id": job.id, "pid": popen.pid, "args": argv}

    @_replying
    def io(self, id: int, stdin_data: bytes = b"", stdin_eof: bool = False, wait: float = 0.05,  # noqa: A002
           read: bool = True) -> dict[str, Any]:
        """Give the program `stdin_data` (and EOF after it), then wait up to `wait` s for news; what there is.

        With `read` the call returns as soon as there is output or a change (exit, an
        EOF) the caller has not seen; without it (a stdin-only call) as soon as fewer
        than STDIN_LIMIT bytes wait for the program. Reply: stdout, stderr (bytes, up
        to MAX_CHUNK each), returncode (None while it runs; negative: killed by that
        signal), stdout_eof/stderr_eof (all of that stream was handed out),
        stdin_closed (further stdin is dropped: EOF sent, or the program closed it; a
        terminal's stdin ends with the ^D typed, not with stdin_eof), stdin_pending (bytes not yet taken by the program).
        """
        deadline = time.monotonic() + max(0.0, min(float(wait), MAX_WAIT))
        with self._cond:
            if id not in self._jobs and id in self._ended:    # closed (by teardown): its end, once more
                return {"stdout": b"", "stderr": b"", "returncode": self._ended[id], "stdout_eof": True,
                        "stderr_eof": True, "stdin_closed": True, "stdin_pending": 0}
            job = self._job(id)
            if stdin_data and not job.stdin_closed and not job.stdin_eof:
                job.pending += stdin_data
            if stdin_eof and job.master is None:      # a terminal's EOF is the ^D the user types
                job.stdin_eof = True
            if stdin_data or stdin_eof:
                self._wake()
            while not job.closed:
                if read and (job.stdout.buffer or job.stderr.buffer or job.state() != job.reported):
                    break
                if not read and (len(job.pending) < STDIN_LIMIT or job.stdin_closed or job.exited):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            reply: dict[str, Any] = {"stdout": b"", "stderr": b""}
            if read:
                for name in ("stdout", "stderr"):
                    stream: _Stream = getattr(job, name)
                    if stream.buffer:
                        full = len(stream.buffer) >= self.max_buffer
                        reply[name] = bytes(stream.buffer[:MAX_CHUNK])
                        del stream.buffer[:MAX_CHUNK]
                        if full:
                            self._wake()          # the pump reads that stream again
                job.reported = job.state()
            job.state()
            reply.update(returncode=job.returncode, stdout_eof=job.stdout.delivered(),
                         stderr_eof=job.stderr.delivered(), stdin_closed=job.stdin_closed,
                         stdin_pending=len(job.pending))
            return reply

    @_replying
    def signal(self, id: int, sig: int) -> bool:  # noqa: A002
        """Send `sig` to the program's first process (as Popen.send_signal); False once it has ended."""
        with self._cond:
            job = self._job(id)
        if job.program.popen.poll() is not None:
            return False
        job.program.popen.send_signal(sig)
        return True

    @_replying
    def resize(self, id: int, rows: int, cols: int) -> bool:  # noqa: A002
        """Set the size of the program's terminal (its foreground job gets SIGWINCH); False without one."""
        with self._cond:
            job = self._job(id)
            if job.master is None or job.closed:
                return False
            _set_size(job.master, rows, cols)
            return True

    @_replying
    def close(self, id: int, grace: float = STOP_GRACE) -> int | None:  # noqa: A002
        """Forget the program: stop it and all its processes if it still runs (SIGTERM, SIGKILL after
        `grace`), release our ends of its stdio. Its returncode (None if it could not be had);
        a later `io` of it gives that returncode and EOFs."""
        with self._cond:
            job = self._jobs.get(id)
            if job is None:
                return self._ended.get(id)
        if job.program.popen.poll() is None:      # (meanwhile `io` still serves it: its exit is seen)
            job.program.stop(grace)
        with self._cond:
            self._retire([job])
        self._wake()
        return job.returncode

    def stop_all(self, grace: float = STOP_GRACE) -> None:
        """Teardown: stop every program (and everything it started), the guard, the pump."""
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
        self._table.stop_all(grace)               # (meanwhile `io` still serves them: exits are seen)
        with self._cond:
            self._retire(list(self._jobs.values()))
        self._wake()
        pump = self._pump
        if pump is not None and pump is not threading.current_thread():
            pump.join(5.0)
        if pump is None or not pump.is_alive():
            for job in self._closing:
                self._dispose(job)
            self._closing = []
            with contextlib.suppress(OSError):
                self._selector.close()
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._wake_r = self._wake_w = -1      # (a late _wake() must not write to a reused number)

    def rehand(self, node: str, restart: Callable[[], None]) -> list[int]:
        """Run `restart` (the node's new kernel), then hand it the listeners of the node's programs."""
        return self._table.rehand(node, restart)

    def jobs(self) -> list[dict[str, Any]]:
        """What runs: id, pid, node, argv, returncode of each program not yet closed."""
        with self._cond:
            return [{"id": job.id, "pid": job.program.pid, "node": job.program.site.node,
                     "argv": list(job.program.record.argv), "returncode": job.returncode}
                    for job in self._jobs.values()]

    # -- inside ---------------------------------------------------------------------------------

    def _retire(self, jobs: list[_Job]) -> None:
        """Closed: the pump releases their fds; their returncode is kept for a late `io` (under the lock)."""
        for job in [job for job in jobs if not job.closed]:
            job.closed = True
            job.returncode = job.program.popen.poll()
            self._jobs.pop(job.id, None)
            self._ended[job.id] = job.returncode
            self._closing.append(job)
        while len(self._ended) > ENDED_KEPT:
            self._ended.pop(next(iter(self._ended)))
        self._cond.notify_all()

    def _job(self, id: int) -> _Job:  # noqa: A002
        job = self._jobs.get(id)
        if job is None:
            raise LookupError(f"no program {id} on this machine (closed, or its emulation stopped)")
        return job

    @staticmethod
    def _shell(shell: str | None) -> str:
        for candidate in (shell, os.environ.get("SHELL"), "bash"):
            if candidate and shutil.which(candidate):
                return candidate
        return "sh"

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"w")

    def _run_pump(self) -> None:
        """The one thread that reads every program's output, writes its stdin and sees it exit.

        Only this thread registers fds and closes our ends of a program's stdio, and it
        closes an fd only once it is unregistered: a number reused by a new program is
        never confused with the old one."""
        registered: dict[int, tuple[int, Any]] = {}
        while True:
            with self._cond:
                closing, self._closing = self._closing, []
                wanted = self._interests()
                stdin_done = [job for job in self._jobs.values()
                              if job.stdin_closed and job.master is None and job.stdin_fd is not None]
                finished = self._stopping and not self._jobs
            for fd in [fd for fd, interest in registered.items() if wanted.get(fd) != interest]:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(fd)
                del registered[fd]
            for job in closing:
                self._dispose(job)
            for job in stdin_done:
                with self._cond:
                    self._close_stdin(job)
            if finished:
                return
            for fd, interest in wanted.items():
                if fd not in registered:
                    self._selector.register(fd, *interest)
                    registered[fd] = interest
            ready = self._selector.select()
            with self._cond:
                for key, events in ready:
                    if key.data is None:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_r, 4096)
                        continue
                    job, what = key.data
                    if not job.closed:
                        self._serve(job, what, events)
                self._cond.notify_all()

    def _interests(self) -> dict[int, tuple[int, Any]]:
        """fd -> (selector events, (job, what)): what the pump waits on now (under the lock)."""
        wanted: dict[int, tuple[int, Any]] = {}
        for job in self._jobs.values():
            if job.closed:
                continue
            for name in ("stdout", "stderr"):
                stream = getattr(job, name)
                if stream.fd is not None and not stream.eof and len(stream.buffer) < self.max_buffer:
                    wanted[stream.fd] = (selectors.EVENT_READ, (job, name))
            if job.stdin_fd is not None and not job.stdin_closed and (job.pending or job.stdin_eof):
                if job.stdin_fd in wanted:                # a pty master: both ways on one fd
                    wanted[job.stdin_fd] = (selectors.EVENT_READ | selectors.EVENT_WRITE, (job, "tty"))
                else:
                    wanted[job.stdin_fd] = (selectors.EVENT_WRITE, (job, "stdin"))
            if job.pidfd is not None and not job.exited:
                wanted[job.pidfd] = (selectors.EVENT_READ, (job, "exit"))
        return wanted

    def _serve(self, job: _Job, what: str, events: int) -> None:
        """One ready fd of `job` (under the lock)."""
        if what == "exit":                    # (Popen.poll is None while another thread reaps it: state() retries)
            job.exited = True
            job.returncode = job.program.popen.poll()
            return                            # (its pidfd is closed at disposal, after unregistering)
        if what in ("stdout", "stderr", "tty") and events & selectors.EVENT_READ:
            stream = job.stdout if what == "tty" else getattr(job, what)
            try:
                data: bytes | None = os.read(stream.fd, READ_SIZE)
            except BlockingIOError:
                data = None
            except OSError as error:          # EIO: every holder of the pty's other side has closed it
                if error.errno != errno.EIO:
                    raise
                data = b""
            if data == b"":
                stream.eof = True
            elif data:
                stream.buffer += data
        if what in ("stdin", "tty") and events & selectors.EVENT_WRITE:
            self._write_stdin(job)

    def _write_stdin(self, job: _Job) -> None:
        try:
            if job.pending:
                written = os.write(job.stdin_fd, job.pending[:READ_SIZE])
                del job.pending[:written]
        except BlockingIOError:
            return
        except OSError as error:              # EPIPE: the program closed its stdin (or exited)
            if error.errno not in (errno.EPIPE, errno.EIO, errno.EBADF):
                raise
            job.pending.clear()
            job.stdin_closed = True
        if not job.pending and job.stdin_eof and job.master is None:
            job.stdin_closed = True           # the pump closes the pipe once it is unregistered

    @staticmethod
    def _close_stdin(job: _Job) -> None:
        if job.program.popen.stdin is not None:
            with contextlib.suppress(OSError):
                job.program.popen.stdin.close()
        job.stdin_fd = None

    def _dispose(self, job: _Job) -> None:
        """Close our ends of a closed job's stdio (never registered in the selector any more)."""
        popen = job.program.popen
        for pipe in (popen.stdin, popen.stdout, popen.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError, ValueError):
                    pipe.close()
        for fd in (job.master, job.pidfd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        job.master = job.pidfd = job.stdin_fd = None
        job.stdout.fd = job.stderr.fd = None


def _set_size(fd: int, rows: int, cols: int) -> None:
    """TIOCSWINSZ (tty_ioctl(4)): the kernel sends SIGWINCH to the terminal's foreground process group."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", int(rows), int(cols), 0, 0))


def _take_terminal() -> None:
    """In the program's child (after setsid): its stdin, the pty's slave, becomes the session's
    controlling terminal (TIOCSCTTY, tty_ioctl(4)), so the shell there has job control."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def __getattr__(name: str) -> Any:
    """The controller's side lives in control/remote_exec_process.py; importable from here too."""
    if name in ("RemoteProcess", "attach_remote"):
        from . import remote_exec_process

        return getattr(remote_exec_process, name)
    raise AttributeError(name)
