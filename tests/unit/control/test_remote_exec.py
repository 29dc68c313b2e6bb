"""RemoteProcess (control/remote_exec_process.py) against an in-process ExecRelay (control/remote_exec.py).

The relay is the real one (its pump, bounded buffers, long poll, error replies); only its
ProgramTable is replaced by `PlainTable`, which starts plain processes (no seccomp trap,
no root): what is under test is the relaying and Popen's interface, not the node.
"""
from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
from types import SimpleNamespace

import pytest

from control.programs import ProgramError
from control.remote_exec import ExecRelay, error_reply, raise_reply
from control.remote_exec_process import RemoteProcess, attach_remote
from tests.waiting import wait_for

pytestmark = pytest.mark.timeout(60)

PY = sys.executable


class PlainTable:
    """ProgramTable's interface (start, stop_all, rehand) with plain subprocess.Popen."""

    def __init__(self) -> None:
        self.programs: list[SimpleNamespace] = []

    def start(self, site, argv, *, env=None, assignments=None, cwd=None, foreground=False, **popen_kwargs):
        environment = dict(os.environ if env is None else env)
        environment.update(NETEMU_NODE=site.node, **(assignments or {}))
        popen = subprocess.Popen(list(argv), env=environment, cwd=cwd, **popen_kwargs)

        def stop(grace: float = 1.0) -> None:
            if popen.poll() is None:
                popen.terminate()
                try:
                    popen.wait(grace)
                except subprocess.TimeoutExpired:
                    popen.kill()
                    popen.wait()
        program = SimpleNamespace(popen=popen, pid=popen.pid, site=site, record=SimpleNamespace(argv=list(argv)),
                                  stop=stop)
        self.programs.append(program)
        return program

    def stop_all(self, grace: float = 1.0) -> None:
        for program in self.programs:
            program.stop(grace)

    def rehand(self, node, restart):
        restart()
        return []


@pytest.fixture
def relay(tmp_path):
    relay = ExecRelay("unit", str(tmp_path), nodes=["h1", "h2"], programs=PlainTable())
    yield relay
    relay.stop_all()
    assert not [p for p in relay._table.programs if p.popen.poll() is None]


def direct(relay: ExecRelay):
    """The `call` a controller gets: here the relay itself (a cluster goes through Ray)."""
    return lambda method, **kwargs: getattr(relay, method)(**kwargs)


def remote(relay: ExecRelay, argv, **kwargs) -> RemoteProcess:
    return RemoteProcess(direct(relay), "h1", argv, **kwargs)


def python(source: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(source)]


# -- output, exit status ---------------------------------------------------------------------------


def test_stdout_bytes_and_the_exit_status(relay):
    process = remote(relay, ["sh", "-c", "echo hello $NETEMU_NODE; echo oops >&2; exit 3"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert isinstance(process.pid, int) and process.args == ["sh", "-c", process.args[2]]
    assert process.stdout.read() == b"hello h1\n"
    assert process.stderr.read() == b"oops\n"
    assert process.wait(10) == 3 and process.returncode == 3 and process.poll() == 3


def test_text_mode_readline_iteration_and_universal_newlines(relay):
    process = remote(relay, ["printf", "one\\r\\ntwo\\nthree"], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "one\n"
    assert list(process.stdout) == ["two\n", "three"]
    assert process.wait(10) == 0
    process = remote(relay, ["printf", "caf\\303\\251"], stdout=subprocess.PIPE, encoding="utf-8")
    assert process.communicate(timeout=10) == ("café", None)
    process = remote(relay, ["printf", "x\\ny"], stdout=subprocess.PIPE, universal_newlines=True)
    assert process.universal_newlines and process.communicate(timeout=10)[0] == "x\ny"


def test_stderr_to_stdout_and_devnull(relay):
    process = remote(relay, ["sh", "-c", "echo out; echo err >&2"], stdout=subprocess.PIPE,
                     stderr=subprocess.STDOUT, text=True)
    assert sorted(process.communicate(timeout=10)[0].split()) == ["err", "out"]
    assert process.stderr is None
    process = remote(relay, ["sh", "-c", "echo out; echo err >&2; read x; exit ${x:-9}"], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stdout is None and process.stdin is None
    assert process.communicate(timeout=10) == (None, b"err\n")
    assert process.returncode == 9              # stdin was /dev/null: `read` saw EOF


def test_inherited_outputs_reach_our_fds_before_wait_returns(relay, capfd):
    process = remote(relay, ["sh", "-c", "echo to-stdout; echo to-stderr >&2"], stdin=subprocess.DEVNULL)
    assert process.stdout is None and process.stderr is None
    assert process.wait(10) == 0
    captured = capfd.readouterr()
    assert (captured.out, captured.err) == ("to-stdout\n", "to-stderr\n")


def test_an_fd_and_a_file_object_as_outputs(relay, tmp_path):
    with open(tmp_path / "out", "wb") as out:
        process = remote(relay, ["sh", "-c", "echo a; echo b >&2"], stdout=out, stderr=out.fileno())
        assert process.wait(10) == 0
        wait_for(lambda: process._drained.is_set())
    assert sorted((tmp_path / "out").read_bytes().split()) == [b"a", b"b"]


# -- stdin ---------------------------------------------------------------------------------------


def test_communicate_sends_input_and_closes_stdin(relay):
    process = remote(relay, ["wc", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    out, err = process.communicate("twelve bytes", timeout=10)
    assert (out.strip(), err, process.returncode) == ("12", None, 0)


def test_stdin_written_by_hand_then_eof(relay):
    process = remote(relay, python("""
        import sys
        for line in sys.stdin:
            print(line.strip().upper(), flush=True)
        print("eof")
    """), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    process.stdin.write("first\n")
    assert process.stdout.readline() == "FIRST\n"     # line by line: nothing waits for EOF
    process.stdin.write("second\n")
    assert process.stdout.readline() == "SECOND\n"
    process.stdin.close()
    assert process.stdout.read() == "eof\n"
    assert process.wait(10) == 0


def test_writing_to_a_program_that_has_ended_breaks_the_pipe(relay):
    process = remote(relay, ["true"], stdin=subprocess.PIPE)
    assert process.wait(10) == 0

    def broken() -> bool:
        try:
            process.stdin.write(b"x" * 65536)
            process.stdin.flush()
        except BrokenPipeError:
            return True
        return False
    wait_for(broken)


def test_five_megabytes_each_way_byte_exact(relay, tmp_path):
    data = hashlib.shake_256(b"netemu").digest(5 * 1000 * 1000)
    source = tmp_path / "data"
    source.write_bytes(data)
    process = remote(relay, ["cat", str(source)], stdout=subprocess.PIPE)
    out, _ = process.communicate(timeout=30)
    assert (len(out), hashlib.sha256(out).digest(), process.returncode) == (len(data), hashlib.sha256(data).digest(), 0)
    process = remote(relay, ["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, _ = process.communicate(data, timeout=30)
    assert hashlib.sha256(out).digest() == hashlib.sha256(data).digest() and process.returncode == 0


def test_output_nobody_reads_stays_bounded_and_blocks_the_program(tmp_path):
    table = PlainTable()
    relay = ExecRelay("unit", str(tmp_path), programs=table, max_buffer=1 << 16)
    try:
        data = hashlib.shake_256(b"bounded").digest(4 * 1000 * 1000)
        (tmp_path / "data").write_bytes(data)
        process = remote(relay, ["cat", str(tmp_path / "data")], stdout=subprocess.PIPE)
        job = relay._jobs[process.id]
        wait_for(lambda: len(job.stdout.buffer) >= 1 << 16)         # our pipe full, the relay's buffer full
        assert len(job.stdout.buffer) < (1 << 16) + (1 << 16) and process.poll() is None
        assert table.programs[0].popen.poll() is None              # cat is blocked in write()
        assert process.stdout.read() == data
        assert process.wait(10) == 0
    finally:
        relay.stop_all()


# -- waiting, signals ------------------------------------------------------------------------------


def test_wait_times_out_then_kill_gives_minus_nine(relay):
    process = remote(relay, ["sleep", "60"])
    assert process.poll() is None
    with pytest.raises(subprocess.TimeoutExpired) as expired:
        process.wait(0.2)
    assert expired.value.timeout == 0.2 and expired.value.cmd == ["sleep", "60"]
    process.kill()
    assert process.wait(10) == -signal.SIGKILL
    process.kill()                                 # after the end: nothing, as Popen


def test_terminate_and_send_signal(relay):
    process = remote(relay, ["sleep", "60"])
    process.terminate()
    assert process.wait(10) == -signal.SIGTERM
    process = remote(relay, python("""
        import signal, sys
        signal.signal(signal.SIGUSR1, lambda *a: sys.exit(42))
        print("ready", flush=True)
        signal.pause()
    """), stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signal.SIGUSR1)
    assert process.wait(10) == 42


def test_communicate_timeout_keeps_what_was_read(relay):
    process = remote(relay, python("""
        import signal
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
        print("first", flush=True)
        signal.sigwait([signal.SIGUSR1])
        print("second")
    """), stdout=subprocess.PIPE, text=True)
    with pytest.raises(subprocess.TimeoutExpired):
        process.communicate(timeout=0.5)
    with pytest.raises(ValueError):
        process.communicate("late input")
    process.send_signal(signal.SIGUSR1)
    assert process.communicate(timeout=10) == ("first\nsecond\n", None)
    assert process.returncode == 0


def test_context_manager_closes_the_pipes_and_waits(relay):
    with remote(relay, ["sh", "-c", "read x; echo got $x"], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as process:
        process.stdin.write(b"it\n")
        process.stdin.flush()
        assert process.stdout.readline() == b"got it\n"
    assert process.returncode == 0 and process.stdout.closed and process.stdin.closed


# -- errors ------------------------------------------------------------------------------------


def test_missing_and_non_executable_programs_raise_as_popen(relay, tmp_path):
    with pytest.raises(FileNotFoundError) as missing:
        remote(relay, ["no-such-program-here"])
    assert missing.value.filename == "no-such-program-here"
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(PermissionError):
        remote(relay, [str(plain)])
    with pytest.raises(LookupError, match="no node 'h9'"):
        RemoteProcess(direct(relay), "h9", ["true"])
    with pytest.raises(ValueError, match="preexec_fn"):
        remote(relay, ["true"], preexec_fn=lambda: None)
    with pytest.raises(TypeError):
        remote(relay, ["true"], bogus=1)
    assert remote(relay, ["true"], close_fds=True, pass_fds=()).wait(10) == 0


def test_error_replies_are_plain_data_and_come_back_as_the_exception():
    reply = error_reply(FileNotFoundError(2, "No such file or directory", "ping"))
    assert reply == {"error": "FileNotFoundError", "errno": 2, "message": "No such file or directory",
                     "filename": "ping"}
    with pytest.raises(FileNotFoundError) as raised:
        raise_reply(reply)
    assert (raised.value.errno, raised.value.filename) == (2, "ping")
    assert raise_reply({"id": 1}) == {"id": 1}


def test_a_lost_relay_ends_the_process_as_killed(relay):
    calls = direct(relay)
    broken = threading.Event()

    def call(method, **kwargs):
        if broken.is_set() and method == "io":
            raise ConnectionError("the agent died")
        return calls(method, **kwargs)
    process = RemoteProcess(call, "h1", ["sleep", "60"], stdout=subprocess.PIPE)
    broken.set()
    assert process.wait(10) == -signal.SIGKILL
    assert isinstance(process.lost, ConnectionError)
    assert process.stdout.read() == b""


def test_unknown_ids_and_closed_programs(relay):
    assert relay.io(id=999)["error"] == "LookupError"
    started = relay.start("h1", ["sleep", "60"], stdin=False)
    assert relay.jobs()[0]["pid"] == started["pid"]
    assert relay.close(id=started["id"]) == -signal.SIGTERM     # a running program is stopped
    assert relay.jobs() == []
    reply = relay.io(id=started["id"])                           # a late poll: its end, once more
    assert (reply["returncode"], reply["stdout_eof"], reply["stderr_eof"]) == (-signal.SIGTERM, True, True)
    assert relay.close(id=started["id"]) == -signal.SIGTERM
    assert relay.signal(id=started["id"], sig=9)["error"] == "LookupError"


def test_teardown_ends_remote_processes_with_their_real_status(relay):
    process = remote(relay, ["sh", "-c", "echo up; exec sleep 60"], stdout=subprocess.PIPE)
    assert process.stdout.readline() == b"up\n"
    relay.stop_all()
    assert process.wait(10) == -signal.SIGTERM and process.lost is None
    assert process.stdout.read() == b""
    with pytest.raises(ProgramError, match="being stopped"):
        remote(relay, ["true"])


def test_the_long_poll_returns_at_once_with_news_and_is_capped(relay):
    started = relay.start("h1", ["sh", "-c", "echo hi; read x"], stdin=True)
    assert wait_for(lambda: relay.io(id=started["id"], wait=5)["stdout"]) == b"hi\n"
    reply = relay.io(id=started["id"], wait=600)          # nothing new: waits MAX_WAIT, not 600 s
    assert (reply["stdout"], reply["returncode"]) == (b"", None)
    relay.io(id=started["id"], stdin_data=b"x\n", read=False)
    assert wait_for(lambda: relay.io(id=started["id"], wait=1)["returncode"] == 0)


# -- terminals, attach -------------------------------------------------------------------------------


def test_a_pty_gives_a_terminal_and_the_status(relay):
    process = remote(relay, ["sh", "-c", "tty; exit 3"], stdout=subprocess.PIPE, pty=True)
    out, _ = process.communicate(timeout=10)
    assert out.startswith(b"/dev/pts/") and out.endswith(b"\r\n") and process.returncode == 3


def test_resize_reaches_the_program_as_sigwinch(relay):
    process = remote(relay, python("""
        import os, signal
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGWINCH])
        print(os.get_terminal_size(0), flush=True)
        signal.sigwait([signal.SIGWINCH])
        size = os.get_terminal_size(0)
        print(size.lines, size.columns, flush=True)
    """), stdout=subprocess.PIPE, pty=True, rows=30, cols=90, text=True)
    assert process.stdout.readline() == "os.terminal_size(columns=90, lines=30)\n"
    process.resize(40, 100)
    assert process.stdout.readline() == "40 100\n"
    assert process.wait(10) == 0


def test_attach_remote_from_a_pipe_runs_the_script_and_returns_its_status(relay, tmp_path):
    script_r, script_w = os.pipe()
    os.write(script_w, b"echo on $NETEMU_NODE\nexit 4\n")
    os.close(script_w)
    with open(tmp_path / "out", "wb") as out, open(tmp_path / "err", "wb") as err:
        status = attach_remote(direct(relay), "h1", ["sh"], stdin_fd=script_r, stdout_fd=out.fileno(),
                               stderr_fd=err.fileno())
    os.close(script_r)
    assert status == 4
    assert (tmp_path / "out").read_bytes() == b"on h1\n"


def test_attach_remote_through_a_far_terminal(relay, tmp_path):
    keys_r, keys_w = os.pipe()
    os.write(keys_w, b"7\n")
    with open(tmp_path / "out", "wb") as out:
        status = attach_remote(direct(relay), "h1", ["sh", "-c", "read x; tty; exit $x"], pty=True,
                               stdin_fd=keys_r, stdout_fd=out.fileno(), stderr_fd=out.fileno())
    os.close(keys_w)
    os.close(keys_r)
    assert status == 7
    assert b"/dev/pts/" in (tmp_path / "out").read_bytes()


def test_attach_remote_statuses_when_it_cannot_run(relay):
    messages = io.StringIO()
    assert attach_remote(direct(relay), "h1", ["no-such-program-here"], pty=False, stdin_fd=os.open(os.devnull, 0),
                         messages=messages) == 127
    assert messages.getvalue() == "netemu: attach: no-such-program-here: command not found\n"
    messages = io.StringIO()
    assert attach_remote(direct(relay), "h9", ["true"], pty=False, messages=messages, verb="exec") == 1
    assert messages.getvalue().startswith("netemu: exec: unit has no node 'h9' on this machine")


def test_shell_env_and_cwd_as_popen(relay, tmp_path):
    process = remote(relay, "echo $X $NETEMU_NODE $(pwd)", shell=True, stdout=subprocess.PIPE, text=True,
                     env={"PATH": os.environ["PATH"], "X": "x1"}, cwd=tmp_path)
    assert process.communicate(timeout=10)[0] == f"x1 h1 {tmp_path}\n"
    assert process.args == "echo $X $NETEMU_NODE $(pwd)"
    process = remote(relay, ["sh", "-c", "echo $Y"], stdout=subprocess.PIPE, assignments={"Y": "from -e"})
    assert process.communicate(timeout=10)[0] == b"from -e\n"


def test_a_failed_start_leaves_no_fd_open(relay):
    before = set(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(FileNotFoundError):
            remote(relay, ["no-such-program-here"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, text=True)
    assert set(os.listdir("/proc/self/fd")) <= before


def test_finished_processes_leave_no_fd_open(relay):
    import gc

    remote(relay, ["true"], stdin=subprocess.PIPE, stdout=subprocess.PIPE).communicate(timeout=10)  # (the pump)
    gc.collect()
    before = set(os.listdir("/proc/self/fd"))
    for _ in range(5):
        process = remote(relay, ["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert process.communicate(b"data", timeout=10) == (b"data", b"")
        process._output_thread.join(10)
        process._input_thread.join(10)
    del process
    gc.collect()
    assert wait_for(lambda: set(os.listdir("/proc/self/fd")) <= before)
