"""`netemu exec` and `netemu attach` as a user runs them, against a `netemu up -d` in the background.

Every emulation lives under a private NETEMU_RUN_DIR. The tests that need the trap
skip without root locally and fail under CI=true (require_trap).
"""
from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading

import psutil
import pytest

from control.program_guard import registered
from control.rundir import list_emulations, wait_unlocked
from tests.conftest import require_trap
from tests.waiting import wait_for

from ..scenarios.helpers import LAUNCHER, ROOT, private_run_base, wait_gone

pytestmark = pytest.mark.timeout(120)

NAME = "ix-exec"
H2 = "10.0.2.10"


@pytest.fixture(scope="module")
def base():
    """A detached two_lans emulation named ix-exec in a private run base; stopped at the end."""
    require_trap()
    with private_run_base() as path:
        env = {**os.environ, "NETEMU_RUN_DIR": str(path)}
        started = netemu("up", "topologies/two_lans.yaml", "-d", "--name", NAME, env=env)
        assert started.returncode == 0, started.stderr
        try:
            yield path
        finally:
            for info in list_emulations(path):
                if info.alive and info.supervisor_pid:
                    os.kill(info.supervisor_pid, signal.SIGTERM)
                    wait_unlocked(info.path, 10.0)


def netemu(*args: str, timeout: float = 60, env: dict | None = None, input: str | None = None,
           **kwargs) -> subprocess.CompletedProcess:
    """Run `netemu ARGS...` (launcher.py) and capture its output."""
    if input is None:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([sys.executable, str(LAUNCHER), *args], capture_output=True, text=True, input=input,
                          timeout=timeout, cwd=ROOT, env=env, **kwargs)


def _line(stream, timeout: float = 20.0) -> str:
    """The next line of a program's output, waited for with a deadline (a thread reads it)."""
    lines = _readers.get(stream)
    if lines is None:
        lines = _readers[stream] = queue.Queue()

        def read() -> None:
            for line in stream:
                lines.put(line)
            lines.put("")
        threading.Thread(target=read, daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        raise TimeoutError(f"no line within {timeout:g} s") from None


_readers: dict = {}


def _env(base) -> dict:
    return {**os.environ, "NETEMU_RUN_DIR": str(base)}


def _popen_exec(base, *command: str, **kwargs) -> subprocess.Popen:
    """`netemu exec h1 -- COMMAND` in a process group of its own (as a terminal's foreground job)."""
    return subprocess.Popen([sys.executable, str(LAUNCHER), "exec", "h1", "--", *command], cwd=ROOT, env=_env(base),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)


# -- exec -------------------------------------------------------------------------------------


def test_exec_resolves_names_and_names_the_host_after_the_node(base):
    result = netemu("exec", "h1", "--", "python3", "-c",
                    "import socket; print(socket.gethostbyname('h2'), socket.gethostname())", env=_env(base))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{H2} h1\n"


@pytest.mark.parametrize("command, status", [
    (["false"], 1),
    (["sh", "-c", "exit 42"], 42),
    (["sh", "-c", "kill -TERM $$"], 143),
    (["sh", "-c", "kill -KILL $$"], 137),
    (["no-such-program-netemu"], 127),
    (["/etc/hosts"], 126),
])
def test_exec_exit_status_passes_through_as_docker_exec(base, command, status):
    result = netemu("exec", "h1", "--", *command, env=_env(base))
    assert result.returncode == status, result.stderr
    if status == 127:
        assert result.stderr == "netemu: exec: no-such-program-netemu: command not found\n"
    if status == 126:
        assert result.stderr == "netemu: exec: /etc/hosts: permission denied (not executable)\n"


def test_exec_passes_stdin_stdout_stderr_and_variables(base):
    result = netemu("exec", "h2", "-e", "GREETING=hello there", "-e", "EMPTY=", "--", "sh", "-c",
                    'cat; echo "$GREETING|$EMPTY|$NETEMU_NODE"; echo to-stderr >&2',
                    input="line one\nline two\n", env=_env(base))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "line one\nline two\nhello there||h2\n"
    assert result.stderr == "to-stderr\n"


def test_exec_without_a_command_or_with_a_bad_variable_is_a_usage_error(base):
    assert netemu("exec", "h1", env=_env(base)).returncode == 2
    bad = netemu("exec", "h1", "-e", "NOEQUALS", "--", "true", env=_env(base))
    assert (bad.returncode, bad.stderr) == (2, "netemu: exec: -e 'NOEQUALS': expected VAR=VALUE\n")


def test_exec_on_an_unknown_node_lists_the_nodes(base):
    result = netemu("exec", "h9", "--", "true", env=_env(base))
    assert result.returncode == 1
    assert result.stderr == f"netemu: exec: {NAME} has no node 'h9' (nodes: h1, h2, r1)\n"


def test_name_picks_the_emulation_and_is_required_when_several_run(base):
    env = _env(base)
    second = netemu("up", "topologies/single_lan.yaml", "-d", "--name", "ix-exec2", env=env)
    assert second.returncode == 0, second.stderr
    try:
        ambiguous = netemu("exec", "h1", "--", "true", env=env)
        assert ambiguous.returncode == 1
        assert ambiguous.stderr == ("netemu: exec: several emulations are running (ix-exec, ix-exec2): "
                                    "pick one with --name NAME\n")
        unknown = netemu("attach", "--name", "nope", "h1", env=env)
        assert unknown.returncode == 1
        assert unknown.stderr == "netemu: attach: no running emulation named 'nope' (running: ix-exec, ix-exec2)\n"
        chosen = netemu("exec", "--name", "ix-exec2", "h1", "--", "sh", "-c", "echo $NETEMU_EMULATION", env=env)
        assert (chosen.returncode, chosen.stdout) == (0, "ix-exec2\n")
        after_node = netemu("exec", "h1", "--name", "ix-exec", "--", "true", env=env)
        assert after_node.returncode == 0, after_node.stderr
    finally:
        assert netemu("down", "ix-exec2", env=env).returncode == 0


def test_without_the_trap_exec_and_attach_say_why_and_exit_1(base):
    env = {**_env(base), "NETEMU_NO_TRAP": "1"}
    for verb in (["exec", "h1", "--", "true"], ["attach", "h1"]):
        result = netemu(*verb, env=env)
        assert result.returncode == 1
        assert result.stderr.startswith(f"netemu: {verb[0]}: cannot run programs on a node here: "), result.stderr
    assert netemu("status", NAME, env=env).returncode == 0       # the rest of netemu keeps working


SIGINT_PROGRAM = textwrap.dedent("""
    import signal, sys
    signal.signal(signal.SIGINT, lambda signum, frame: sys.exit(42))
    print("ready", flush=True)
    signal.pause()
""")


def test_ctrl_c_reaches_the_program_and_exec_returns_its_status(base):
    process = _popen_exec(base, "python3", "-c", SIGINT_PROGRAM)
    try:
        assert _line(process.stdout) == "ready\n"
        os.killpg(process.pid, signal.SIGINT)             # what the terminal does on Ctrl-C
        assert process.wait(20) == 42                     # the program's status: exec itself ignored SIGINT
    finally:
        process.kill()
        process.communicate()


def test_ctrl_c_kills_a_program_that_does_not_catch_it_with_130(base):
    process = _popen_exec(base, "sh", "-c", "echo ready; exec sleep 60")
    try:
        assert _line(process.stdout) == "ready\n"
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(20) == 130
    finally:
        process.kill()
        process.communicate()


def _program_processes(base, top_pid: int, count: int) -> list[psutil.Process]:
    """The processes of the program recorded with pid `top_pid`, once there are `count` of them."""
    run_dir = str(base / NAME)
    record = wait_for(lambda: next((r for r in registered(run_dir) if r.pid == top_pid), None), timeout=10)

    def members() -> list[psutil.Process] | None:
        found = []
        for process in psutil.process_iter():
            try:
                stat = os.stat(f"/proc/{process.pid}/ns/mnt")
                if (stat.st_dev, stat.st_ino) == record.mnt and process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process)
            except (OSError, psutil.Error):
                continue
        return found if len(found) >= count else None
    return wait_for(members, timeout=10)


def _top_program_pid(exec_process: subprocess.Popen) -> int:
    return wait_for(lambda: next((child.pid for child in psutil.Process(exec_process.pid).children()
                                  if child.name() == "sh"), None), timeout=10)


def test_sigterm_to_exec_stops_the_program_and_its_children(base):
    process = _popen_exec(base, "sh", "-c", "sleep 305 & echo ready; sleep 306")
    try:
        assert _line(process.stdout) == "ready\n"
        processes = _program_processes(base, _top_program_pid(process), 3)
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 143
        assert wait_gone(processes, timeout=10) == []
    finally:
        process.kill()
        process.communicate()


def test_sigkill_of_exec_takes_the_program_and_its_children(base):
    process = _popen_exec(base, "sh", "-c", "sleep 307 & echo ready; sleep 308")
    try:
        assert _line(process.stdout) == "ready\n"
        processes = _program_processes(base, _top_program_pid(process), 3)
        process.kill()
        process.wait(10)
        assert wait_gone(processes, timeout=10) == []
    finally:
        process.kill()
        process.communicate()


def test_down_stops_programs_that_exec_started():
    require_trap()
    with private_run_base() as path:
        env = {**os.environ, "NETEMU_RUN_DIR": str(path)}
        assert netemu("up", "topologies/single_lan.yaml", "-d", "--name", "ix-exec-down", env=env).returncode == 0
        process = subprocess.Popen([sys.executable, str(LAUNCHER), "exec", "h1", "--", "sh", "-c",
                                    "sleep 309 & echo ready; sleep 310"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            assert _line(process.stdout) == "ready\n"
            top = _top_program_pid(process)
            records = wait_for(lambda: registered(str(path / "ix-exec-down")), timeout=10)
            assert [record.pid for record in records] == [top]
            members = [psutil.Process(top)] + psutil.Process(top).children(recursive=True)
            assert netemu("down", "ix-exec-down", env=env).returncode == 0
            assert process.wait(20) in (143, 137)          # the program's status: stopped by the teardown
            assert wait_gone(members, timeout=10) == []
        finally:
            process.kill()
            process.communicate()


# -- attach -----------------------------------------------------------------------------------


def test_attach_reads_commands_from_a_pipe(base):
    result = netemu("attach", "h1", input='echo "$NETEMU_NODE"; hostname\ngetent hosts h2\nexit 3\n', env=_env(base))
    assert result.returncode == 3, result.stderr
    assert result.stdout.splitlines() == ["h1", "h1", f"{H2}       h2"]


def test_attach_pipe_runs_the_nodes_ip(base):
    result = netemu("attach", "h1", input="ip addr\nexit\n", env=_env(base))
    assert result.returncode == 0, result.stderr
    assert "inet 10.0.1.10/24" in result.stdout


class _Terminal:
    """A program on a pseudo-terminal, as a user's: what it shows, what is typed, its exit status."""

    def __init__(self, argv: list[str], env: dict) -> None:
        import pty

        self.pid, self.fd = pty.fork()
        if self.pid == 0:                                  # the child: the program on the terminal
            os.chdir(ROOT)
            os.execve(argv[0], argv, env)
        self.seen = bytearray()

    def _read(self) -> None:
        import select

        readable, _, _ = select.select([self.fd], [], [], 0.1)
        if readable:
            with contextlib.suppress(OSError):             # EIO: the terminal's other side is gone
                self.seen.extend(os.read(self.fd, 4096))

    def expect(self, text: bytes, timeout: float = 20.0) -> None:
        """Wait until `text` is shown, then forget what was shown up to it."""
        def shown() -> bool:
            self._read()
            return text in self.seen
        wait_for(shown, timeout=timeout)
        del self.seen[:self.seen.index(text) + len(text)]

    def type(self, text: bytes) -> None:
        os.write(self.fd, text)

    def exit_status(self, timeout: float = 20.0) -> int:
        def exited() -> list[int] | None:
            self._read()                                   # keep the terminal drained
            done, status = os.waitpid(self.pid, os.WNOHANG)
            return [os.waitstatus_to_exitcode(status)] if done == self.pid else None
        [code] = wait_for(exited, timeout=timeout)
        self.pid = 0
        return code

    def close(self) -> None:
        if self.pid:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
        os.close(self.fd)

    def foreground_is(self, argv: list[str]) -> bool:
        """Is a process with this command line (below ours) the terminal's foreground?"""
        self._read()
        found = [p for p in psutil.Process(self.pid).children(recursive=True) if p.cmdline() == argv]
        return bool(found) and os.tcgetpgrp(self.fd) == os.getpgid(found[0].pid)


def test_attach_on_a_terminal_shows_the_nodes_prompt_and_ctrl_c_interrupts_its_command(base):
    """The prompt `h1$ `; Ctrl-C stops the running command, not the shell; the shell's status is attach's."""
    terminal = _Terminal([sys.executable, str(LAUNCHER), "attach", "h1"], {**_env(base), "SHELL": "/bin/bash"})
    try:
        terminal.expect(b"h1$ ")
        terminal.type(b"hostname; sleep 60\n")
        terminal.expect(b"h1\r\n")                        # hostname printed
        wait_for(lambda: terminal.foreground_is(["sleep", "60"]), timeout=20)
        terminal.type(b"\x03")                             # Ctrl-C: sleep dies, bash prompts again
        terminal.expect(b"h1$ ")
        terminal.type(b"exit 5\n")
        assert terminal.exit_status() == 5
    finally:
        terminal.close()


def test_the_cli_runs_any_program_on_a_node_and_attach_returns_to_its_prompt():
    """`netemu up` on a terminal: `h1 CMD` runs a program (Ctrl-C stops it, not the CLI), `attach h1`
    opens the node's shell and the prompt comes back when it exits."""
    require_trap()
    with private_run_base() as path:
        env = {**os.environ, "NETEMU_RUN_DIR": str(path), "NETEMU_HISTORY": str(path / "history"),
               "SHELL": "/bin/bash"}
        terminal = _Terminal([sys.executable, str(LAUNCHER), "up", "topologies/two_lans.yaml", "--name", "ix-cli"],
                             env)
        try:
            terminal.expect(b"netemu> ", timeout=60)
            terminal.type(b"h2 python3 -c 'import socket; print(socket.gethostname(), socket.gethostbyname(\"h1\"))'\n")
            terminal.expect(b"h2 10.0.1.10\r\n")
            terminal.expect(b"netemu> ")
            terminal.type(b"h1 sleep 60\n")
            wait_for(lambda: terminal.foreground_is(["sleep", "60"]), timeout=20)
            terminal.type(b"\x03")
            terminal.expect(b"*** h1: sleep exited with status 130")
            terminal.expect(b"netemu> ")
            terminal.type(b"attach h1\n")
            terminal.expect(b"h1$ ")
            terminal.type(b"ip addr | grep 'inet 10'; exit\n")
            terminal.expect(b"inet 10.0.1.10/24")
            terminal.expect(b"netemu> ")
            terminal.type(b"exit\n")
            assert terminal.exit_status() == 0
        finally:
            terminal.close()


# -- a restarted node -------------------------------------------------------------------------

UDP_PRINTER = textwrap.dedent("""
    import socket
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("0.0.0.0", 5310))
    print("ready", flush=True)
    while True:
        data, peer = server.recvfrom(100)
        print(data.decode(), peer[0], flush=True)
""")

UDP_SENDER = textwrap.dedent("""
    import socket, sys
    for line in sys.stdin:
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendto(line.strip().encode(), ("h2", 5310))
            s.close()
            print("sent", line.strip(), flush=True)
        except OSError as error:
            print(line.strip(), "failed:", error.strerror, flush=True)
""")


def test_exec_hands_its_program_to_the_restarted_node():
    """`netemu exec` watches its node: while it is down the program's socket calls fail with
    ENETDOWN, and a node restarted under it serves the program again."""
    from control.emulation import Emulation

    from ..scenarios.helpers import topology

    require_trap()
    with private_run_base() as path:
        with Emulation(topology("two_lans"), name="ix-exec-rs") as net:
            server = net["h2"].exec([sys.executable, "-c", UDP_PRINTER], stdout=subprocess.PIPE, text=True)
            assert _line(server.stdout) == "ready\n"
            sender = subprocess.Popen([sys.executable, str(LAUNCHER), "exec", "h1", "--", sys.executable, "-c",
                                       UDP_SENDER], cwd=ROOT, env={**os.environ, "NETEMU_RUN_DIR": str(path)},
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
            try:
                sender.stdin.write("before\n")
                sender.stdin.flush()
                assert _line(sender.stdout) == "sent before\n"
                assert _line(server.stdout) == "before 10.0.1.10\n"
                net["h1"].kill()
                sender.stdin.write("during\n")
                sender.stdin.flush()
                assert _line(sender.stdout) == "during failed: Network is down\n"   # exec answers while it is down
                net["h1"].restart()
                sender.stdin.write("after\n")
                sender.stdin.flush()
                assert _line(sender.stdout) == "sent after\n"     # its socket() waited for the new node
                assert _line(server.stdout) == "after 10.0.1.10\n"
                sender.stdin.close()
                assert sender.wait(20) == 0
            finally:
                sender.kill()
                sender.wait()
