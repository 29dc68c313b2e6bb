"""Running programs on a node: `netemu exec`, `netemu attach`, `node.exec()`/`node.run()`, `netemu> h1 CMD`.

Before changing this file, read issue 12 ("Running programs on a node"), docs/programs.md,
`nodes/trap.py` (`spawn_trapped`: how a program comes to be trapped) and
`control/program_guard.py` (how no process of a program outlives the emulation).

A program "on h1" is an ordinary process of this machine with its socket syscalls
trapped (seccomp user notification) and answered by h1's kernel process:

1. `spawn_trapped` forks; in the child, before the filter and exec, `_Namespaces`
   unshares a mount and a UTS namespace, makes every mount private, bind-mounts the
   run directory's hosts file over /etc/hosts and sets the hostname to the node's
   name: glibc's getaddrinfo, curl and Python resolve topology names, `hostname`
   prints `h1`, and the host's own files are never touched. The child reports the
   ids of its new namespaces (or what failed) on a pipe.
2. The environment is the caller's plus NETEMU_NODE, NETEMU_CONTROL (the node's
   control endpoint, for the tools), NETEMU_PYTHON, NETEMU_EMULATION and PATH with
   the node's tools (`nodes/tools/bin`: ip, ss, sysctl, arp) first; then `-e VAR=VAL`.
3. The listener is handed to the node (`nodes.api.hand_listener` over the node's
   syscall socket RUN_DIR/NODE.sys). The starting process keeps a duplicate, so a
   restarted node is handed it again (`Program.hand`): programs outlive their
   node's crash, as processes outlive a network stack's restart. While the node is
   down the holder answers the program's socket calls with ENETDOWN
   (control/program_down.py); a call the dead node had already taken waits until
   the program gets a signal.
4. The program is recorded (run directory `programs/`, and the holder's guard):
   see control/program_guard.py for teardown and for a holder killed outright.

Exit statuses follow `docker exec`: the program's status, 128+N when signal N
killed it, 127 when the command is not found, 126 when it cannot be executed.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import nodes

from .plan import control_endpoint, syscall_path
from .program_down import DownResponder
from .program_guard import Guard, ProgramRecord, register, stop_programs, unregister

TOOLS_DIR = os.path.join(os.path.dirname(nodes.__file__), "tools", "bin")
COMMAND_NOT_FOUND = 127
NOT_EXECUTABLE = 126
HAND_TIMEOUT = 5.0

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1


class ProgramError(RuntimeError):
    """A program cannot be started on a node (no trap here, node not running, namespace setup failed)."""


@dataclass(frozen=True, slots=True)
class NodeSite:
    """Where a node of a running emulation is reached: its run directory, endpoints and hosts file."""

    emulation: str
    node: str
    run_dir: str

    @property
    def control(self) -> str:
        return control_endpoint(self.run_dir, self.node)

    @property
    def syscall(self) -> str:
        return syscall_path(self.run_dir, self.node)

    @property
    def hosts_file(self) -> str:
        return os.path.join(self.run_dir, "hosts")


def exit_status(returncode: int) -> int:
    """A Popen returncode as a shell shows it: 128+N for a program killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def parse_assignments(texts: Iterable[str]) -> dict[str, str]:
    """`-e VAR=VAL` words as a dict; ValueError for a word without `=` or with an empty name."""
    values = {}
    for text in texts:
        name, equal, value = text.partition("=")
        if not equal or not name:
            raise ValueError(f"-e {text!r}: expected VAR=VALUE")
        values[name] = value
    return values


def program_env(site: NodeSite, base: Mapping[str, str] | None = None,
                assignments: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a program on `site`'s node: `base` (default: ours), the node's variables, PATH."""
    env = dict(os.environ if base is None else base)
    path = [entry for entry in env.get("PATH", os.defpath).split(os.pathsep) if entry and entry != TOOLS_DIR]
    env.update(NETEMU_NODE=site.node, NETEMU_CONTROL=site.control, NETEMU_PYTHON=sys.executable,
               NETEMU_EMULATION=site.emulation, PATH=os.pathsep.join([TOOLS_DIR, *path]))
    env.update(assignments or {})
    return env


def trap_unavailable_reason() -> str | None:
    """Why programs cannot run on nodes here (no root, old kernel, seccomp refused), or None."""
    if os.environ.get("NETEMU_NO_TRAP"):   # lets tests see the message path on a machine that can trap
        return f"syscall trapping is disabled by NETEMU_NO_TRAP={os.environ['NETEMU_NO_TRAP']}"
    from nodes import trap

    return trap.unavailable_reason()


class _Namespaces:
    """The preexec of a program: private mount + UTS namespaces, the hosts file, the hostname.

    Everything it needs is prepared in the parent: between fork and exec the child
    only calls libc through pre-built ctypes functions and writes one line on a pipe.
    """

    def __init__(self, site: NodeSite, argv: list[str], report_fd: int, guard: Guard | None, parent_death: bool,
                 foreground: bool = False) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.unshare = libc.unshare
        self.mount = libc.mount
        self.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
        self.sethostname = libc.sethostname
        self.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        self.prctl = libc.prctl
        self.hosts = os.fsencode(site.hosts_file)
        self.hostname = site.node.encode()
        self.report_fd = report_fd
        self.parent = os.getpid() if parent_death else None
        self.foreground = foreground
        self.guard = guard
        self.node = site.node
        self.argv = argv
        self.chained: Callable[[], None] | None = None

    def _fail(self, step: str) -> None:
        code = ctypes.get_errno()
        os.write(self.report_fd, f"error {step}: {os.strerror(code)}\n".encode())
        raise OSError(code, f"{step}: {os.strerror(code)}")

    def __call__(self) -> None:
        if self.foreground:               # the starter ignores them while it waits; a shell's job gets them
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGQUIT, signal.SIG_DFL)
        if self.parent is not None:       # `netemu exec` killed outright: its program dies with it
            self.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            if os.getppid() != self.parent:
                os._exit(128 + signal.SIGKILL)
        if self.unshare(CLONE_NEWNS | CLONE_NEWUTS) != 0:
            self._fail("unshare(CLONE_NEWNS|CLONE_NEWUTS)")
        if self.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
            self._fail("making the mounts private")
        if self.mount(self.hosts, b"/etc/hosts", None, MS_BIND, None) != 0:
            self._fail(f"bind-mounting {os.fsdecode(self.hosts)} over /etc/hosts")
        if self.sethostname(self.hostname, len(self.hostname)) != 0:
            self._fail("sethostname")
        if self.guard is not None:        # before exec: the guard holds our namespaces from now on
            try:
                self.guard.announce(self.node, self.argv)
            except OSError as error:
                os.write(self.report_fd, f"error telling the guard: {error.strerror}\n".encode())
                raise
        mnt, uts = os.stat("/proc/self/ns/mnt"), os.stat("/proc/self/ns/uts")
        os.write(self.report_fd, f"ok {mnt.st_dev} {mnt.st_ino} {uts.st_dev} {uts.st_ino}\n".encode())
        if self.chained is not None:
            self.chained()


@dataclass(eq=False)
class Program:
    """A program started on a node: its Popen, the listener duplicate we keep, its record."""

    popen: subprocess.Popen
    site: NodeSite
    listener: int
    record: ProgramRecord
    guard: Guard | None = None
    released: bool = field(default=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def hand(self, timeout: float = HAND_TIMEOUT) -> None:
        """Hand (again) our duplicate of the listener to the node, which then serves the program's calls."""
        from nodes.api import hand_listener

        hand_listener(self.site.syscall, self.listener, self.popen.pid, timeout=timeout)

    def stop(self, grace: float = 1.0) -> None:
        """SIGTERM every process of the program, SIGKILL after `grace`; then release it."""
        stop_programs([self.record], grace)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(2.0)
        self.release()

    def release(self) -> None:
        """Forget the program (it has ended, or was stopped): close the listener, drop its record."""
        if self.released:
            return
        self.released = True
        with contextlib.suppress(OSError):
            os.close(self.listener)
        unregister(self.site.run_dir, self.record.pid)
        if self.guard is not None:
            self.guard.remove(self.record.pid)


def start(site: NodeSite, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
          assignments: Mapping[str, str] | None = None, guard: Guard | None = None,
          parent_death: bool = False, foreground: bool = False, **popen_kwargs: Any) -> Program:
    """Start `argv` on `site`'s node and hand its listener over; the running `Program`.

    `env` replaces our environment as the base (as Popen's does); the node's
    variables and `assignments` come on top. `popen_kwargs` go to subprocess.Popen
    (a `preexec_fn` runs after the namespaces are set up). Raises FileNotFoundError /
    PermissionError as Popen does for a missing or non-executable program, and
    ProgramError when the program cannot run on the node. `parent_death`: the program
    is killed when the calling thread ends (PR_SET_PDEATHSIG). `foreground`: SIGINT and
    SIGQUIT are reset to their defaults in the program (the caller ignores them while it waits).
    """
    if not argv:
        raise ValueError("no command given")
    reason = trap_unavailable_reason()
    if reason is not None:
        raise ProgramError(f"cannot run programs on a node here: {reason}")
    from nodes import trap

    report_read, report_write = os.pipe2(os.O_CLOEXEC)
    setup = _Namespaces(site, [str(word) for word in argv], report_write, guard, parent_death, foreground)
    setup.chained = popen_kwargs.pop("preexec_fn", None)
    stdio = {name: popen_kwargs.pop(name, None) for name in ("stdin", "stdout", "stderr")}
    try:
        try:
            popen, listener = trap.spawn_trapped(list(argv), env=program_env(site, env, assignments),
                                                 cwd=popen_kwargs.pop("cwd", None), preexec=setup, **stdio,
                                                 **popen_kwargs)
        finally:
            os.close(report_write)
        report = _read_report(report_read)
    except trap.TrapUnavailable as error:
        said = _read_report(report_read)
        raise ProgramError(said[len("error "):] if said.startswith("error ") else str(error)) from None
    finally:
        os.close(report_read)
    if not report.startswith("ok "):
        _kill_unrecorded(popen, listener)
        raise ProgramError(f"{argv[0]}: the namespaces of the program were not set up ({report or 'no report'})")
    numbers = [int(word) for word in report.split()[1:5]]
    record = ProgramRecord(popen.pid, site.node, [str(word) for word in argv], (numbers[0], numbers[1]),
                           (numbers[2], numbers[3]), os.getpid())
    program = Program(popen, site, listener, record, guard)
    try:
        register(site.run_dir, record)
    except BaseException as error:  # noqa: B902 - e.g. OSError: the run directory is gone, the emulation stops
        program.stop(0.0)
        if not isinstance(error, OSError):
            raise
        raise ProgramError(f"{site.emulation} is not running ({error.strerror})") from None
    try:
        program.hand()
    except BaseException as error:  # noqa: B902 - whatever failed, the program must not run unserved
        program.stop(0.0)
        if not isinstance(error, Exception):
            raise                 # a signal that ends the caller (KeyboardInterrupt, SIGTERM's exception)
        raise ProgramError(f"node {site.node} of {site.emulation} does not take programs: {error}") from None
    return program


def _read_report(fd: int) -> str:
    """The child's line: Popen returned, so the child has exec'd (or failed) and written it."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 4096).decode(errors="replace").strip()
    except BlockingIOError:
        return ""


def _kill_unrecorded(popen: subprocess.Popen, listener: int) -> None:
    popen.kill()
    popen.wait()
    os.close(listener)


def is_interactive(fd: int = 0) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


ATTACH_RC = "attach.bashrc"
_BASHRC = """\
# netemu attach: the user's ~/.bashrc, then the node's prompt and tools first on PATH
if [ -f ~/.bashrc ]; then . ~/.bashrc; fi
PS1='${NETEMU_NODE}$ '
case ":$PATH:" in "%(tools)s:"*) ;; *) PATH="%(tools)s:$PATH" ;; esac
"""


def attach_argv(site: NodeSite, interactive: bool, shell: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The shell command of `netemu attach` and the variables it needs (its prompt shows the node).

    bash gets an rcfile in the run directory (the user's ~/.bashrc, then `h1$ `);
    another shell gets PS1 in its environment. With stdin not a terminal the shell
    reads commands from it, without prompts, as `printf 'ip addr\\nexit\\n' | netemu attach h1` wants.
    """
    shell = shell or os.environ.get("SHELL") or "bash"
    extra = {"PS1": f"{site.node}$ "}
    if os.path.basename(shell) == "bash":
        rcfile = os.path.join(site.run_dir, ATTACH_RC)
        text = _BASHRC % {"tools": TOOLS_DIR}
        try:
            with open(rcfile, encoding="utf-8") as handle:
                current = handle.read()
        except OSError:
            current = None
        if current != text:
            temporary = f"{rcfile}.{os.getpid()}"
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(temporary, rcfile)
        return ([shell, "--rcfile", rcfile, "-i"] if interactive else [shell]), extra
    return ([shell, "-i"] if interactive else [shell]), extra


def reclaim_terminal(fd: int = 0) -> None:
    """Make our process group the terminal's foreground again (an interactive shell took it)."""
    if not is_interactive(fd):
        return
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        with contextlib.suppress(OSError):
            if os.tcgetpgrp(fd) != os.getpgrp():
                os.tcsetpgrp(fd, os.getpgrp())
    finally:
        signal.signal(signal.SIGTTOU, previous)


class ProgramTable:
    """The programs an `Emulation` started (node.exec/run, `netemu> h1 CMD`), with their guard.

    Thread-safe. Finished programs are released lazily (on the next start, on
    restart, at teardown), which closes their listener duplicates. While a node
    is down (`node_alive(name)` false) a `DownResponder` answers its programs'
    calls with ENETDOWN (control/program_down.py).
    """

    def __init__(self, node_alive: Callable[[str], bool]) -> None:
        self._programs: list[Program] = []
        self._guard: Guard | None = None
        self._lock = threading.Lock()
        self._node_alive = node_alive
        self._responder: DownResponder | None = None

    def start(self, site: NodeSite, argv: Sequence[str], **kwargs: Any) -> Program:
        with self._lock:
            self._sweep()
            if self._guard is None or not self._guard.alive:   # (a guard killed by hand is replaced)
                self._guard = Guard()
            if self._responder is None:
                self._responder = DownResponder(self.live, self._node_alive)
            guard = self._guard
        program = start(site, argv, guard=guard, **kwargs)
        with self._lock:
            self._programs.append(program)
        return program

    def live(self) -> list[Program]:
        with self._lock:
            return list(self._programs)

    def _sweep(self) -> None:
        finished = [p for p in self._programs if p.popen.poll() is not None]
        if not finished:
            return
        with self._responder.lock if self._responder is not None else contextlib.nullcontext():
            for program in finished:      # (its listener fd is closed: never while the responder uses it)
                program.release()
                self._programs.remove(program)

    def rehand(self, node: str, restart: Callable[[], None]) -> list[int]:
        """Run `restart` (the node's new kernel), then hand it every live program of `node`; the pids
        handed. Calls are answered with ENETDOWN while the node is down, never during the hand-over."""
        responder = self._responder
        if responder is not None:
            responder.pause(node)
        try:
            restart()
            with self._lock:
                self._sweep()
                live = [p for p in self._programs if p.site.node == node]
            for program in live:
                program.hand()
        finally:
            if responder is not None:
                responder.resume(node)
        return [program.pid for program in live]

    def stop_all(self, grace: float = 1.0) -> None:
        """Teardown: SIGTERM every program and all its processes, SIGKILL after `grace`, end the guard."""
        with self._lock:
            programs, self._programs = self._programs, []
            guard, self._guard = self._guard, None
            responder, self._responder = self._responder, None
        if responder is not None:
            responder.close()
        stop_programs([p.record for p in programs], grace)
        for program in programs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                program.popen.wait(2.0)
            program.release()
        if guard is not None:
            guard.close()


def describe_spawn_error(argv: Sequence[str], error: OSError) -> tuple[int, str]:
    """(exit status, message) for a program that could not be executed, as a shell says it."""
    if isinstance(error, FileNotFoundError) or error.errno == errno.ENOENT:
        return COMMAND_NOT_FOUND, f"{argv[0]}: command not found"
    if isinstance(error, PermissionError) or error.errno in (errno.EACCES, errno.EPERM):
        return NOT_EXECUTABLE, f"{argv[0]}: permission denied (not executable)"
    return NOT_EXECUTABLE, f"{argv[0]}: cannot execute: {error.strerror}"
