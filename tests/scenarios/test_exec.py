"""Programs on a node through the scenario API: `node.exec()` / `node.run()` / `node.socket()`.

Names and the hostname only need the program's mount and UTS namespaces; the UDP
exchanges need the node kernel to serve the program's trapped calls.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import psutil
import pytest

from control.emulation import Emulation
from control.exec_client import cli_run, run_foreground
from control.program_guard import registered
from control.programs import TOOLS_DIR, exit_status
from tests.conftest import require_trap
from tests.waiting import wait_for

from .helpers import ROOT, UDP_CLIENT, next_line, output_lines, private_run_base, topology, wait_gone

pytestmark = pytest.mark.timeout(90)

H1, H2 = "10.0.1.10", "10.0.2.10"


@pytest.fixture(scope="module")
def net():
    require_trap()
    with private_run_base():
        with Emulation(topology("two_lans"), name="scn-exec") as emulation:
            yield emulation


# -- names, hostname, environment ------------------------------------------------------------


def test_topology_names_resolve_and_the_hostname_is_the_node(net):
    result = net["h1"].run([sys.executable, "-c", "import socket; print(socket.gethostbyname('h2'), "
                            "socket.gethostname())"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{H2} h1\n"


def test_the_hosts_own_files_and_hostname_are_untouched(net):
    with open("/etc/hosts", encoding="utf-8") as handle:
        before = handle.read()
    result = net["h2"].run(["sh", "-c", "hostname; cat /etc/hosts"], capture_output=True, text=True, timeout=30)
    assert result.stdout.splitlines()[0] == "h2"
    assert f"{H1}\th1" in result.stdout
    with open("/etc/hosts", encoding="utf-8") as handle:
        assert handle.read() == before
    assert socket.gethostname() != "h2"


def test_a_program_sees_the_nodes_variables_and_tools_first_on_path(net):
    result = net["h1"].run(["sh", "-c", 'echo "$NETEMU_NODE|$NETEMU_CONTROL|$NETEMU_PYTHON|$PATH|$EXTRA"'],
                           capture_output=True, text=True, timeout=30, env={**os.environ, "EXTRA": "given"})
    node, control, python, path, extra = result.stdout.strip().split("|")
    assert (node, python, extra) == ("h1", sys.executable, "given")
    assert control == net.supervisor["h1"].control
    assert path.split(":")[0] == TOOLS_DIR


# -- exit statuses, stdio --------------------------------------------------------------------


def test_exit_statuses_pass_through(net, tmp_path):
    assert net["h1"].run(["false"], timeout=30).returncode == 1
    killed = net["h1"].run(["sh", "-c", "kill -TERM $$"], timeout=30)
    assert killed.returncode == -15 and exit_status(killed.returncode) == 143
    with pytest.raises(FileNotFoundError):
        net["h1"].run(["no-such-program-netemu"])
    not_executable = tmp_path / "script.sh"
    not_executable.write_text("#!/bin/sh\necho never\n")
    with pytest.raises(PermissionError):
        net["h1"].run([str(not_executable)])


def test_the_foreground_runner_gives_docker_exec_statuses(net, tmp_path):
    site = net["h1"].site()
    errors = tmp_path / "errors.txt"
    with open(errors, "w") as stderr:
        assert run_foreground(site, ["sh", "-c", "exit 7"], stderr=stderr) == 7
        assert run_foreground(site, ["sh", "-c", "kill -KILL $$"], stderr=stderr) == 137
        assert run_foreground(site, ["no-such-program-netemu"], stderr=stderr) == 127
        assert run_foreground(site, [str(tmp_path)], stderr=stderr) == 126
    assert errors.read_text().splitlines() == ["netemu: exec: no-such-program-netemu: command not found",
                                               f"netemu: exec: {tmp_path}: permission denied (not executable)"]


def test_stdin_and_stdout_pass_through_unchanged(net):
    data = bytes(range(256)) * 4096                   # 1 MiB, every byte value
    result = net["h1"].run(["cat"], input=data, capture_output=True, timeout=30)
    assert result.returncode == 0 and result.stdout == data and result.stderr == b""
    echoed = net["h1"].run(["sh", "-c", "read line; echo \"got $line\" >&2"], input="hello\n", capture_output=True,
                           text=True, timeout=30)
    assert (echoed.stdout, echoed.stderr) == ("", "got hello\n")


def test_run_with_check_and_timeout_behave_as_subprocess_run(net):
    with pytest.raises(subprocess.CalledProcessError):
        net["h1"].run(["false"], check=True, timeout=30)
    with pytest.raises(subprocess.TimeoutExpired):
        net["h1"].run(["sleep", "30"], timeout=0.5)


def test_exec_returns_the_popen_of_the_program_itself(net):
    process = net["h2"].exec(["sleep", "30"])
    try:
        program = psutil.Process(process.pid)
        assert program.cmdline() == ["sleep", "30"]
        assert program.ppid() == os.getpid()
        assert os.stat(f"/proc/{process.pid}/ns/uts").st_ino != os.stat("/proc/self/ns/uts").st_ino
        assert program.environ()["NETEMU_NODE"] == "h2"
        assert [record.pid for record in registered(str(net.supervisor.run_dir.path))].count(process.pid) == 1
        process.terminate()
        assert process.wait(10) == -15
    finally:
        process.kill()
        process.wait()


def test_the_cli_runs_any_program_on_the_node(net):
    class Output(list):
        def write(self, text: str) -> None:
            self.append(text)

        def flush(self) -> None:
            pass
    output = Output()
    assert cli_run(net, "h2", ["sh", "-c", "hostname; echo oops >&2; exit 3"], output, script=True) == 3
    assert "".join(output) == "h2\noops\n"


# -- teardown --------------------------------------------------------------------------------

FORKER = textwrap.dedent("""
    import os, signal, subprocess, sys
    child = subprocess.Popen(["sleep", "300"])
    daemon = subprocess.Popen(["sleep", "301"], start_new_session=True)   # its own session, as a daemon
    if os.fork() == 0:          # an orphan: its parent exits at once, it is reparented
        if os.fork() == 0:
            signal.pause()      # lives until teardown kills it
        os._exit(0)
    os.wait()
    print(child.pid, daemon.pid, flush=True)
    signal.pause()
""")


def test_teardown_stops_every_program_and_all_its_processes():
    require_trap()
    with private_run_base():
        with Emulation(topology("two_lans"), name="scn-exec-td") as net:
            process = net["h1"].exec([sys.executable, "-c", FORKER], stdout=subprocess.PIPE, text=True)
            lines = output_lines(process)
            child, daemon = (int(word) for word in next_line(process, lines, 10).split())
            namespace = os.stat(f"/proc/{process.pid}/ns/mnt").st_ino
            members = _wait_members(namespace, 4)       # python, its child, the daemon, the orphan
            assert {process.pid, child, daemon} <= {p.pid for p in members}
            run_dir = net.supervisor.run_dir.path
        assert wait_gone(members, timeout=10) == []
        assert process.poll() is not None
        assert not run_dir.exists()


def _wait_members(inode: int, count: int) -> list[psutil.Process]:
    """The processes in mount namespace `inode`, once there are at least `count` of them."""
    return wait_for(lambda: (lambda found: found if len(found) >= count else None)(_in_namespace(inode)), timeout=10)


def _in_namespace(inode: int) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if os.stat(f"/proc/{process.pid}/ns/mnt").st_ino == inode and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (OSError, psutil.Error):
            continue
    return found


def test_a_killed_holder_takes_its_programs_with_it():
    """The guard: SIGKILL of the process that started a program stops the program and its children."""
    require_trap()
    with private_run_base() as base:
        with Emulation(topology("single_lan"), name="scn-exec-holder") as net:
            holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
                import sys
                from control.exec_client import find_site, run_foreground
                sys.exit(run_foreground(find_site("scn-exec-holder", "h1"), ["sh", "-c", "sleep 303 & sleep 304"]))
            """)], cwd=ROOT, env={**os.environ, "NETEMU_RUN_DIR": str(base)})
            run_dir = str(net.supervisor.run_dir.path)
            records = wait_for(lambda: registered(run_dir), timeout=15)
            sleepers = _wait_members(records[0].mnt[1], 3)   # sh and its two sleeps
            holder.kill()
            holder.wait()
            assert wait_gone(sleepers, timeout=10) == []


# -- the node's stack (needs the node kernel serving programs) ---------------------------------

UDP_ECHO = textwrap.dedent("""
    import socket, sys
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("0.0.0.0", int(sys.argv[1])))
    print("ready", flush=True)
    data, peer = server.recvfrom(2048)
    print(data.decode(), peer[0], flush=True)
    server.sendto(data.upper(), peer)
""")


def test_programs_on_two_nodes_exchange_udp_across_the_router(net):
    server = net["h2"].exec([sys.executable, "-c", UDP_ECHO, "5300"], stdout=subprocess.PIPE, text=True)
    lines = output_lines(server)
    try:
        assert next_line(server, lines, 10) == "ready"
        client = net["h1"].run([sys.executable, "-c", UDP_CLIENT, "5300", "hello"], capture_output=True, text=True,
                               timeout=30)
        assert client.returncode == 0, client.stderr
        assert client.stdout == f"HELLO {H2} 5300\n"
        assert next_line(server, lines, 10) == f"hello {H1}"   # the source address the server saw: h1's emulated one
        assert server.wait(10) == 0
    finally:
        server.kill()
        server.wait()


def test_a_shell_driven_by_a_pipe_runs_the_nodes_tools_and_programs(net):
    server = net["h2"].exec([sys.executable, "-c", UDP_ECHO, "5301"], stdout=subprocess.PIPE, text=True)
    lines = output_lines(server)
    try:
        assert next_line(server, lines, 10) == "ready"
        script = (f"ip addr\n"
                  f"{sys.executable} -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                  f"s.sendto(b\"from-shell\", (\"h2\", 5301))'\n"
                  "exit 0\n")
        shell = net["h1"].run(["bash"], input=script, capture_output=True, text=True, timeout=60)
        assert shell.returncode == 0, shell.stderr
        assert f"inet {H1}/24" in shell.stdout             # h1's addresses, not the host's
        assert next_line(server, lines, 10) == f"from-shell {H1}"
    finally:
        server.kill()
        server.wait()


def test_an_in_process_socket_talks_to_a_program(net):
    receiver = net["h2"].socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("0.0.0.0", 5302))
        receiver.settimeout(10)
        sent = net["h1"].run([sys.executable, "-c", "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                              ".sendto(b'to-api', ('h2', 5302))"], capture_output=True, text=True, timeout=30)
        assert sent.returncode == 0, sent.stderr
        data, peer = receiver.recvfrom(100)
        assert (data, peer[0]) == (b"to-api", H1)
    finally:
        receiver.close()


def test_a_program_outlives_its_nodes_restart_and_opens_new_sockets_after_it():
    require_trap()
    with private_run_base():
        with Emulation(topology("two_lans"), name="scn-exec-rs") as net:
            server = net["h2"].exec([sys.executable, "-u", "-c", textwrap.dedent("""
                import socket
                server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                server.bind(("0.0.0.0", 5303))
                print("ready", flush=True)
                while True:
                    data, peer = server.recvfrom(100)
                    print(data.decode(), peer[0], flush=True)
            """)], stdout=subprocess.PIPE, text=True)
            server_lines = output_lines(server)
            assert next_line(server, server_lines, 10) == "ready"
            sender = net["h1"].exec([sys.executable, "-u", "-c", textwrap.dedent("""
                import socket, sys
                for line in sys.stdin:
                    try:
                        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        s.sendto(line.strip().encode(), ("h2", 5303))
                        s.close()
                        print("sent", line.strip(), flush=True)
                    except OSError as error:
                        print(line.strip(), "failed:", error.strerror, flush=True)
            """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            sender_lines = output_lines(sender)
            sender.stdin.write("before\n")
            sender.stdin.flush()
            assert next_line(sender, sender_lines, 10) == "sent before"
            assert next_line(server, server_lines, 10) == f"before {H1}"
            net["h1"].kill()
            sender.stdin.write("during\n")
            sender.stdin.flush()
            assert next_line(sender, sender_lines, 10) == "during failed: Network is down"   # ENETDOWN while it is down
            net["h1"].restart()
            assert sender.poll() is None                      # the program outlived its node
            sender.stdin.write("after\n")
            sender.stdin.flush()
            assert next_line(sender, sender_lines, 20) == "sent after"
            assert next_line(server, server_lines, 20) == f"after {H1}"
            sender.stdin.close()
            assert sender.wait(10) == 0
