"""Programs on a node of another machine, relayed (control/remote_exec.py), on a real emulation.

An ExecRelay built from a single-machine emulation's run directory, as a cluster's host
agent builds one from its own, starts programs on its nodes (the trap: root, seccomp user
notification); RemoteProcess and attach_remote reach it through a plain `call`, as the
controller does through Ray. What is checked is what a user of a remote node sees: the
node's stack (Debian's ping crosses the router), names and hostname, stdin, stdout, exit
status, a terminal, and no process left once the relay is stopped.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

from control.emulation import Emulation
from control.program_guard import registered
from control.remote_exec import ExecRelay
from control.remote_exec_process import RemoteProcess, attach_remote
from tests.conftest import require_tool, require_trap
from tests.waiting import wait_for

from .helpers import private_run_base, topology, wait_gone

pytestmark = pytest.mark.timeout(120)

H2 = "10.0.2.10"


@pytest.fixture(scope="module")
def net():
    require_trap()
    with private_run_base():
        with Emulation(topology("two_lans"), name="scn-rexec") as emulation:
            yield emulation


@pytest.fixture
def relay(net):
    relay = ExecRelay(net.name, net.plan.run_dir, nodes=list(net.topology.nodes),
                      node_alive=lambda node: net.supervisor[node].alive)
    yield relay
    relay.stop_all()


def direct(relay: ExecRelay):
    return lambda method, **kwargs: getattr(relay, method)(**kwargs)


def test_debian_ping_runs_on_the_node_through_the_relay(relay):
    require_tool("ping")
    process = RemoteProcess(direct(relay), "h1", ["ping", "-c", "1", "-W", "5", "h2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert f"PING h2 ({H2})" in out and "1 packets transmitted, 1 received" in out and "ttl=63" in out


def test_a_python_program_reads_stdin_and_sees_the_node(relay):
    process = RemoteProcess(direct(relay), "h2", [sys.executable, "-c", (
        "import socket, sys; data = sys.stdin.read(); "
        "print(socket.gethostname(), socket.gethostbyname('h2'), len(data), data.upper().strip()); sys.exit(7)")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate("hello from the controller\n", timeout=30)
    assert (out, err, process.returncode) == (f"h2 {H2} 26 HELLO FROM THE CONTROLLER\n", "", 7)


def test_a_terminal_on_the_far_side(relay):
    process = RemoteProcess(direct(relay), "h1", ["sh", "-c", "tty; hostname; exit 3"], stdout=subprocess.PIPE,
                            pty=True, text=True)
    out, _ = process.communicate(timeout=30)
    lines = out.splitlines()
    assert lines[0].startswith("/dev/pts/") and lines[1] == "h1" and process.returncode == 3


def test_the_program_is_recorded_and_stopped_with_all_its_processes(net, relay):
    process = RemoteProcess(direct(relay), "h1", ["sh", "-c", "sleep 60 & echo started; wait"],
                            stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "started\n"
    assert process.pid in [record.pid for record in registered(net.plan.run_dir)]
    family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    assert len(family) == 2
    relay.stop_all()
    assert wait_gone(family, 10) == []
    assert process.wait(10) == -signal.SIGTERM and process.lost is None   # as teardown stops a local one
    assert process.pid not in [record.pid for record in registered(net.plan.run_dir)]


def test_attach_remote_runs_the_nodes_shell_from_a_pipe(relay, tmp_path):
    require_tool("ping")
    script_r, script_w = os.pipe()
    os.write(script_w, b"hostname\nping -c 1 -W 5 h2 >/dev/null && echo reachable\nexit 5\n")
    os.close(script_w)
    with open(tmp_path / "out", "wb") as out:
        status = attach_remote(direct(relay), "h1", stdin_fd=script_r, stdout_fd=out.fileno(),
                               stderr_fd=out.fileno())
    os.close(script_r)
    assert (status, (tmp_path / "out").read_text()) == (5, "h1\nreachable\n")


def test_a_missing_command_and_an_unknown_node(relay):
    with pytest.raises(FileNotFoundError):
        RemoteProcess(direct(relay), "h1", ["no-such-program-here"])
    with pytest.raises(LookupError):
        RemoteProcess(direct(relay), "nope", ["true"])
    wait_for(lambda: not relay.jobs())


def test_ctrl_c_on_the_far_terminal_interrupts_the_program_even_if_the_agent_ignores_sigint(relay):
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)     # as a Ray worker may: not inherited by programs
    try:
        process = RemoteProcess(direct(relay), "h1", [sys.executable, "-c",
                                "import signal; print('ready', flush=True); signal.pause()"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, pty=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert process.stdout.readline() == b"ready\r\n"
    process.stdin.write(b"\x03")              # Ctrl-C: the far terminal's line discipline sends SIGINT
    process.stdin.flush()
    assert process.wait(30) == -signal.SIGINT


def test_the_nodes_tools_come_first_on_path(relay):
    process = RemoteProcess(direct(relay), "h1", ["ip", "-4", "route"], stdout=subprocess.PIPE, text=True)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0 and "10.0.1.0/24" in out and "via 10.0.1.1" in out


def test_a_crashed_node_gives_enetdown_and_its_restart_serves_the_program_again(net, relay):
    process = RemoteProcess(direct(relay), "h1", [sys.executable, "-u", "-c", (
        "import errno, socket, sys\n"
        "for line in sys.stdin:\n"
        "    try:\n"
        "        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close(); print('ok')\n"
        "    except OSError as error:\n"
        "        print(errno.errorcode[error.errno])\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def ask() -> str:
        process.stdin.write("?\n")
        return process.stdout.readline().strip()
    assert ask() == "ok"
    net["h1"].kill()
    assert ask() == "ENETDOWN"                    # the relay answers for the dead node (node_alive)

    def restart() -> None:
        net.supervisor.restart("h1", ready_timeout=net.ready_timeout)
        net._wait_attached([interface.attachment for interface in net.topology.nodes["h1"].interfaces.values()])
    assert relay.rehand("h1", restart) == [process.pid]
    assert ask() == "ok"
    process.stdin.close()
    assert process.wait(30) == 0
