"""Programs on a node of another machine: the controller's side (`RemoteProcess`, `attach_remote`).

Before changing this file, read control/remote_exec.py (the agent's `ExecRelay`, whose
calls this side makes) and subprocess's own Popen (whose interface `RemoteProcess` copies).

`RemoteProcess` has subprocess.Popen's interface for a program that runs on another
machine: `pid` (there), `args`, `stdin`/`stdout`/`stderr` (real pipes of this process,
so read(), readline(), iteration, select() and text mode work as on a Popen),
`poll`, `wait(timeout)`, `communicate(input, timeout)`, `send_signal`, `terminate`,
`kill`, `returncode`, the context manager. It speaks to the relay through one
function, `call(method, **kwargs)` (for a cluster: a Ray call of the agent's
`exec_call`; in tests: the relay itself), from two threads of its own:

* the output thread long-polls `io` and writes what comes into the local ends
  (our pipes for PIPE, our own fds 1/2 for None, the given fd or file): a reader
  that does not read blocks it, which stops the polls, which fills the relay's
  buffer, which blocks the program's write(): flow control end to end, as a pipe;
* the stdin thread (when the program's stdin is relayed) reads the local source
  (our pipe for PIPE, fd 0 for None) and sends it, EOF included.

`attach_remote` is the terminal side of `netemu attach`/`netemu exec` for such a
node: raw mode and a pty on the far side when stdin is a terminal, SIGWINCH as
`resize`, the exit status as a shell gives it.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import locale
import logging
import os
import select
import signal
import subprocess
import sys
import termios
import threading
import time
import tty
from typing import IO, Any, Callable, Mapping, Sequence

from .programs import ProgramError, describe_spawn_error, exit_status
from .remote_exec import STDIN_LIMIT, raise_reply

log = logging.getLogger(__name__)

Call = Callable[..., Any]

POLL_WAIT = 0.5          # seconds one io long poll may wait on the relay (it caps at MAX_WAIT)
SEND_SIZE = 1 << 16      # stdin bytes per io call
DRAIN_GRACE = 0.5        # after the exit, how long wait() lets inherited outputs (fd 1/2) catch up
PIPE_SIZE = 1 << 20      # F_SETPIPE_SZ of our pipes: room for output a caller reads after wait()
_IGNORED = {"close_fds": True, "restore_signals": True, "start_new_session": False, "process_group": None,
            "pass_fds": (), "preexec_fn": None, "startupinfo": None, "creationflags": 0, "user": None,
            "group": None, "extra_groups": None, "umask": -1, "pipesize": -1, "executable": None}


def _fileno(target: Any) -> int:
    return target if isinstance(target, int) else target.fileno()


def _pipe() -> tuple[int, int]:
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError, AttributeError):   # fcntl(2) F_SETPIPE_SZ: capped by pipe-max-size
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    return read_end, write_end


def _write_all(fd: int, data: bytes) -> bool:
    """Write all of `data` to `fd` (blocking); False when the reader is gone (EPIPE) or fd is closed."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        except (BrokenPipeError, OSError):
            return False
        view = view[written:]
    return True


class RemoteProcess:
    """subprocess.Popen's interface for a program started on a node of another machine.

    `call(method, **kwargs)` reaches the machine's `ExecRelay`. `args` as Popen's
    (a list, or a string with shell=True; None: the node's shell, as `netemu attach`).
    stdin/stdout/stderr: PIPE, DEVNULL, None (inherit: ours are relayed), an fd or a
    file object; stderr may be STDOUT. text/encoding/errors/universal_newlines/bufsize
    as Popen's. `env` replaces the far machine's environment (not ours: the two
    machines differ) as the base; `assignments` (as `netemu exec -e`) go on top of
    the node's variables. `pty`: the program gets a terminal there (rows x cols),
    stdout carries what it shows (stderr included). Popen arguments that only make
    sense on this machine (preexec_fn, pass_fds...) raise ValueError when given.
    """

    def __init__(self, call: Call, node: str, args: Sequence[str] | str | None, *, stdin: Any = None,
                 stdout: Any = None, stderr: Any = None, text: bool | None = None, encoding: str | None = None,
                 errors: str | None = None, universal_newlines: bool | None = None, bufsize: int = -1,
                 env: Mapping[str, str] | None = None, cwd: Any = None, shell: bool = False,
                 assignments: Mapping[str, str] | None = None, pty: bool = False, rows: int = 24, cols: int = 80,
                 user_shell: str | None = None, poll_wait: float = POLL_WAIT, **popen_kwargs: Any) -> None:
        for name, value in popen_kwargs.items():
            if name not in _IGNORED:
                raise TypeError(f"RemoteProcess() got an unexpected keyword argument {name!r}")
            if value != _IGNORED[name] and not (name == "pass_fds" and not value):
                raise ValueError(f"{name} cannot be used for a program on a node of another machine")
        if universal_newlines is not None and text is not None and bool(universal_newlines) != bool(text):
            raise subprocess.SubprocessError("Cannot disambiguate when both text and universal_newlines are "
                                             "supplied but different. Pass one or the other.")
        self._call = call
        self.node = node
        self.text_mode = bool(encoding or errors or text or universal_newlines)
        self.encoding, self.errors = encoding, errors
        if self.text_mode and encoding is None:
            self.encoding = locale.getpreferredencoding(False)
        self._line_buffering = self.text_mode and bufsize == 1
        if self._line_buffering:            # as Popen: line buffering is the text stdin's, the files stay buffered
            bufsize = -1
        if isinstance(args, (str, bytes)):
            words = ["/bin/sh", "-c", os.fsdecode(args)] if shell else [os.fsdecode(args)]
        else:
            words = None if args is None else [os.fsdecode(word) for word in args]
            if shell and words:
                words = ["/bin/sh", "-c", *words]
        self.args: Any = args
        self.returncode: int | None = None
        self.lost: BaseException | None = None       # why the relay could not be reached any more
        self.stdin: IO[Any] | None = None
        self.stdout: IO[Any] | None = None
        self.stderr: IO[Any] | None = None
        self._owned: list[int] = []                  # our fds to close when done
        self._exited = threading.Event()
        self._drained = threading.Event()
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._communication: dict[str, Any] | None = None
        self._lock = threading.Lock()
        try:
            source, relay_stdin = self._local_stdin(stdin, bufsize)
            sinks: dict[str, int | None] = {}
            sinks["stdout"], relay_stdout = self._local_output("stdout", stdout, bufsize)
            if stderr == subprocess.STDOUT:
                sinks["stderr"], relay_stderr = None, "stdout"
            else:
                sinks["stderr"], relay_stderr = self._local_output("stderr", stderr, bufsize)
            self._inherited = {name for name, target in (("stdout", stdout), ("stderr", stderr))
                               if target is None or isinstance(target, int) and target >= 0 or hasattr(target, "fileno")}
            reply = raise_reply(call("start", node=node, argv=words, env=None if env is None else dict(env),
                                     assignments=dict(assignments or {}), cwd=None if cwd is None else os.fsdecode(cwd),
                                     stdin=relay_stdin, stdout=relay_stdout, stderr=relay_stderr, pty=pty,
                                     rows=rows, cols=cols, shell=user_shell))
        except BaseException:
            self._close_local()
            for stream in (self.stdin, self.stdout, self.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError, ValueError):
                        stream.close()
            for fd in (self._stop_r, self._stop_w):
                os.close(fd)
            self._stop_w = None
            raise
        self.id: int = reply["id"]
        self.pid: int = reply["pid"]
        if args is None:
            self.args = reply.get("args")
        self._sinks = sinks
        self._source = source if relay_stdin else None
        self._poll_wait = poll_wait
        self._output_thread = threading.Thread(target=self._pump_output, name=f"remote-exec-{self.pid}-out",
                                               daemon=True)
        self._output_thread.start()
        self._input_thread = None
        if self._source is not None:
            self._input_thread = threading.Thread(target=self._pump_input, name=f"remote-exec-{self.pid}-in",
                                                  daemon=True)
            self._input_thread.start()

    def __repr__(self) -> str:
        return f"<RemoteProcess: node={self.node} pid={getattr(self, 'pid', None)} returncode={self.returncode}>"

    # -- setting up the local ends -----------------------------------------------------------------

    def _local_stdin(self, target: Any, bufsize: int) -> tuple[int | None, bool]:
        """(the fd the stdin thread reads, whether the program's stdin is relayed)."""
        if target == subprocess.DEVNULL:
            return None, False
        if target == subprocess.PIPE:
            read_end, write_end = _pipe()
            self._owned.append(read_end)
            raw = io.open(write_end, "wb", bufsize)
            self.stdin = io.TextIOWrapper(raw, encoding=self.encoding, errors=self.errors, write_through=True,
                                          line_buffering=self._line_buffering) if self.text_mode else raw
            return read_end, True
        if target is None:
            return 0, True
        return _fileno(target), True

    def _local_output(self, name: str, target: Any, bufsize: int) -> tuple[int | None, bool]:
        """(the fd the output thread writes `name` into, whether the relay captures it)."""
        if target == subprocess.DEVNULL:
            return None, False
        if target == subprocess.PIPE:
            read_end, write_end = _pipe()
            self._owned.append(write_end)
            raw = io.open(read_end, "rb", bufsize)
            setattr(self, name, io.TextIOWrapper(raw, encoding=self.encoding, errors=self.errors)
                    if self.text_mode else raw)
            return write_end, True
        if target is None:
            return (1 if name == "stdout" else 2), True
        return _fileno(target), True

    def _close_local(self) -> None:
        with self._lock:
            owned, self._owned = self._owned, []
        for fd in owned:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _close_owned(self, fd: int | None) -> None:
        with self._lock:
            if fd is None or fd not in self._owned:
                return
            self._owned.remove(fd)
        with contextlib.suppress(OSError):
            os.close(fd)

    # -- the relay threads -------------------------------------------------------------------------

    def _pump_output(self) -> None:
        exited_at = None
        self._remote_returncode = -signal.SIGKILL
        eof = {"stdout": False, "stderr": False}
        try:
            while True:
                reply = raise_reply(self._call("io", id=self.id, wait=self._poll_wait))
                for name in ("stdout", "stderr"):
                    sink = self._sinks[name]
                    if reply[name] and sink is not None and not _write_all(sink, reply[name]):
                        self._close_owned(sink)       # our reader closed its end: the rest is dropped
                    if reply[f"{name}_eof"] and not eof[name]:
                        eof[name] = True
                        self._close_owned(self._sinks[name])
                if reply["returncode"] is not None and exited_at is None:
                    exited_at = time.monotonic()
                    self._remote_returncode = reply["returncode"]
                if exited_at is not None and not self._exited.is_set() and (
                        all(eof[name] for name in self._inherited) or time.monotonic() - exited_at > DRAIN_GRACE):
                    self._set_exit(self._remote_returncode)
                if exited_at is not None and all(eof.values()):
                    break
            self._call("close", id=self.id)
        except Exception as error:  # noqa: BLE001 - the agent or its machine is gone: the program with it
            self.lost = error
            log.warning("%s on %s: the relay is lost (%s): treated as killed", self.args, self.node, error)
            self._set_exit(self._remote_returncode)
        finally:
            self._set_exit(-signal.SIGKILL)            # (no-op when set: a BaseException unwinding)
            for name in ("stdout", "stderr"):
                self._close_owned(self._sinks[name])
            self._drained.set()

    def _set_exit(self, returncode: int) -> None:
        with self._lock:
            if self._exited.is_set():
                return
            self.returncode = returncode
            self._exited.set()
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")

    def _pump_input(self) -> None:
        source = self._source
        assert source is not None
        try:
            while not self._exited.is_set():
                readable, _, _ = select.select([source, self._stop_r], [], [])
                if self._stop_r in readable:
                    break
                try:
                    data = os.read(source, SEND_SIZE)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                reply = raise_reply(self._call("io", id=self.id, stdin_data=data, stdin_eof=not data,
                                               wait=self._poll_wait, read=False))
                while data and reply["stdin_pending"] >= STDIN_LIMIT and not reply["stdin_closed"] \
                        and reply["returncode"] is None:   # the program does not read: wait, as a full pipe
                    reply = raise_reply(self._call("io", id=self.id, wait=self._poll_wait, read=False))
                if not data or reply["stdin_closed"]:
                    break
        except Exception:  # noqa: BLE001 - the output thread sees the relay lost and says so
            pass
        finally:
            self._close_owned(source)                 # a writer to our stdin pipe now gets EPIPE, as on Popen

    # -- Popen's interface -------------------------------------------------------------------------

    @property
    def universal_newlines(self) -> bool:
        return self.text_mode

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(LookupError):    # it has just ended and been closed
                raise_reply(self._call("signal", id=self.id, sig=int(sig)))

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def resize(self, rows: int, cols: int) -> None:
        """Set the size of the program's terminal (pty=True): it gets SIGWINCH."""
        if self.returncode is None:
            with contextlib.suppress(LookupError):
                raise_reply(self._call("resize", id=self.id, rows=int(rows), cols=int(cols)))

    def communicate(self, input: Any = None, timeout: float | None = None) -> tuple[Any, Any]:  # noqa: A002
        """As Popen.communicate: send `input`, read stdout/stderr to EOF, wait; TimeoutExpired keeps
        what was read for the next call."""
        if self._communication is not None and input:
            raise ValueError("Cannot send input after starting communication")
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._communication is None:
            self._communication = {"stdout": [], "stderr": [], "threads": []}
            if self.stdin is not None:
                self._communication["threads"].append(self._spawn(self._feed, input))
            for name in ("stdout", "stderr"):
                stream = getattr(self, name)
                if stream is not None:
                    self._communication["threads"].append(
                        self._spawn(self._collect, stream, self._communication[name]))
        for thread in self._communication["threads"]:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        results = []
        for name in ("stdout", "stderr"):
            stream = getattr(self, name)
            if stream is None:
                results.append(None)
                continue
            stream.close()
            parts = self._communication[name]
            results.append(("" if self.text_mode else b"").join(parts))
        return results[0], results[1]

    @staticmethod
    def _spawn(target: Callable[..., None], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        return thread

    def _feed(self, data: Any) -> None:
        assert self.stdin is not None
        with contextlib.suppress(BrokenPipeError, ValueError, OSError):
            if data:
                self.stdin.write(data)
        with contextlib.suppress(BrokenPipeError, ValueError, OSError):
            self.stdin.close()

    @staticmethod
    def _collect(stream: IO[Any], parts: list[Any]) -> None:
        while True:
            chunk = stream.read(1 << 16) if not isinstance(stream, io.TextIOBase) else stream.read()
            if not chunk:
                return
            parts.append(chunk)

    def __enter__(self) -> "RemoteProcess":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for stream in (self.stdout, self.stderr):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()
        try:
            if self.stdin is not None:
                with contextlib.suppress(BrokenPipeError, OSError, ValueError):
                    self.stdin.close()
        finally:
            self.wait()

    def __del__(self) -> None:
        stop_w = getattr(self, "_stop_w", None)
        threads = [getattr(self, "_output_thread", None), getattr(self, "_input_thread", None)]
        if stop_w is not None and not any(thread is not None and thread.is_alive() for thread in threads):
            for fd in (self._stop_r, self._stop_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._stop_w = None


class _Stop(BaseException):
    """SIGTERM/SIGHUP while we relay a program: unwinds like KeyboardInterrupt."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def attach_remote(call: Call, node: str, argv: Sequence[str] | None = None, *,
                  assignments: Mapping[str, str] | None = None, pty: bool | None = None,
                  user_shell: str | None = None, stdin_fd: int = 0, stdout_fd: int = 1, stderr_fd: int = 2,
                  messages: IO[str] | None = None, verb: str = "attach") -> int:
    """`netemu attach`/`exec` for a node of another machine: relay until the program ends; its status.

    argv None: the node's shell (`user_shell`, else $SHELL, else bash, on that
    machine). `pty` None: a terminal on the far side when our stdin and stdout are
    terminals; then our terminal is in raw mode (the keys, Ctrl-C included, go to the
    far terminal, whose line discipline makes the signals) and SIGWINCH becomes a
    resize. Without a terminal SIGINT/SIGQUIT are forwarded to the program. SIGTERM or
    SIGHUP to us stops it (and all its processes) and gives 128+N. Statuses as
    `netemu exec` (docs/programs.md): 127/126 when it cannot be executed, 1 when it
    cannot run there (the reason on `messages`, default stderr).
    """
    messages = messages or sys.stderr
    interactive = pty if pty is not None else (os.isatty(stdin_fd) and os.isatty(stdout_fd))
    rows, cols = 24, 80
    if interactive:
        with contextlib.suppress(OSError):
            cols, rows = os.get_terminal_size(stdout_fd)
    extra = dict(assignments or {})
    if interactive:
        extra.setdefault("TERM", os.environ.get("TERM", "xterm"))
    main_thread = threading.current_thread() is threading.main_thread()
    process: list[RemoteProcess] = []
    resized = threading.Event()

    def forward(signum: int, frame: object) -> None:
        if process:
            with contextlib.suppress(Exception):
                process[0].send_signal(signum)

    def stop(signum: int, frame: object) -> None:
        raise _Stop(signum)

    def winch(signum: int, frame: object) -> None:
        resized.set()

    previous: dict[int, Any] = {}
    if main_thread:
        for signum, handler in ((signal.SIGINT, forward), (signal.SIGQUIT, forward), (signal.SIGTERM, stop),
                                (signal.SIGHUP, stop), (signal.SIGWINCH, winch)):
            previous[signum] = signal.signal(signum, handler)
    saved = None
    try:
        try:
            process.append(RemoteProcess(call, node, None if argv is None else list(argv), stdin=stdin_fd,
                                         stdout=stdout_fd, stderr=stderr_fd, assignments=extra, pty=interactive,
                                         rows=rows, cols=cols, user_shell=user_shell))
        except OSError as error:
            code, message = describe_spawn_error(argv or ["shell"], error)
            print(f"netemu: {verb}: {message}", file=messages)
            return code
        except (ProgramError, LookupError, ValueError) as error:
            print(f"netemu: {verb}: {error}", file=messages)
            return 1
        remote = process[0]
        if interactive and os.isatty(stdin_fd):
            saved = termios.tcgetattr(stdin_fd)
            tty.setraw(stdin_fd, termios.TCSANOW)
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                returncode = remote.wait(0.2)
                break
            if resized.is_set():
                resized.clear()
                with contextlib.suppress(OSError):
                    cols, rows = os.get_terminal_size(stdout_fd)
                    remote.resize(rows, cols)
        remote._drained.wait(2.0)                 # the last output, before our prompt comes back
        if remote.lost is not None:
            print(f"\r\nnetemu: {verb}: the machine of {node} is lost ({remote.lost})", file=messages)
        return exit_status(returncode)
    except _Stop as stopped:
        if process:
            with contextlib.suppress(Exception):
                raise_reply(call("close", id=process[0].id))
        return 128 + stopped.signum
    finally:
        if saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
