"""A program on a node in the foreground: `netemu exec`, `netemu attach`, and `netemu> h1 CMD` / `attach h1`.

Before changing this file, read control/programs.py (how a program is started on a
node) and docs/programs.md (what users see).

The foreground rules, as a shell runs a job and as `docker exec` behaves:
* the program inherits our stdin/stdout/stderr and stays in our process group, so
  it is in the terminal's foreground and Ctrl-C reaches it from the terminal. We
  ignore SIGINT and SIGQUIT while we wait (a shell does the same) and return its
  status: 128+N when signal N killed it.
* SIGTERM or SIGHUP to us (the terminal closed, `kill`): the program and all its
  processes are stopped, then we exit 128+N. SIGKILL to us: the program's first
  process dies with us (PR_SET_PDEATHSIG), and our guard (control/program_guard.py)
  stops the rest.
* While we wait we watch the emulation: while the node's process is gone we answer
  the program's socket calls with ENETDOWN (control/program_down.py); a node
  restarted (its pid in state.json changed) is handed the program's listener
  again; an emulation whose supervisor died without tearing down ends the program
  (its node is gone for good).
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any, Mapping, Sequence

import psutil

from .program_down import answer_calls
from .program_guard import Guard
from .programs import (NodeSite, Program, ProgramError, attach_argv, describe_spawn_error, exit_status,
                       reclaim_terminal, start)
from .rundir import STATE_FILE, list_emulations, wait_unlocked

WATCH_INTERVAL = 0.25
DOWN_INTERVAL = 0.05
NODE_TARGET = "nodes.kernel:run"


class _Stop(BaseException):
    """SIGTERM/SIGHUP while we run a program: unwinds like KeyboardInterrupt, never caught as an error."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def find_running(name: str | None) -> Any:
    """The running emulation `name` (default: the only one running); LookupError says why not."""
    running = [info for info in list_emulations() if info.alive]
    if name is not None:
        chosen = [info for info in running if info.name == name]
        if not chosen:
            raise LookupError(f"no running emulation named {name!r}" + (
                f" (running: {', '.join(i.name for i in running)})" if running else " (none is running)"))
    elif len(running) > 1:
        raise LookupError(f"several emulations are running ({', '.join(i.name for i in running)}): "
                          "pick one with --name NAME")
    else:
        chosen = running
    if not chosen:
        raise LookupError("no emulation is running (start one with `netemu up TOPO.yaml -d`)")
    return chosen[0]


def find_site(name: str | None, node: str) -> NodeSite:
    """The node `node` of the running emulation `name` (default: the only one running); LookupError says why not."""
    info = find_running(name)
    processes = (info.state or {}).get("processes", {})
    nodes = sorted(n for n, record in processes.items() if record.get("target") == NODE_TARGET)
    if node not in nodes:
        raise LookupError(f"{info.name} has no node {node!r} (nodes: {', '.join(nodes)})")
    return NodeSite(info.name, node, str(info.path))


class _NodeWatch:
    """What the state file of the emulation says about one node; whether the emulation still runs."""

    def __init__(self, site: NodeSite) -> None:
        self.site = site
        self.pid, self.create_time = self._node_identity()

    def _node_identity(self) -> tuple[int | None, float | None]:
        try:
            state = json.loads(Path(self.site.run_dir, STATE_FILE).read_text())
            record = state["processes"][self.site.node]
        except (OSError, ValueError, KeyError, TypeError):
            return None, None
        if record.get("state") != "ready":
            return None, None
        return record.get("pid"), record.get("create_time")

    def node_down(self) -> bool:
        """True when the node process we handed the program to has ended (its calls are ours to answer)."""
        if self.pid is None:
            return False
        try:
            process = psutil.Process(self.pid)
            if self.create_time is not None and abs(process.create_time() - self.create_time) > 0.05:
                return True           # the pid was reused
            return process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
        except psutil.Error:
            return False

    def emulation_alive(self) -> bool:
        return not wait_unlocked(self.site.run_dir, 0.0)

    def restarted(self) -> bool:
        """True once when the node runs again under a new pid (it was restarted)."""
        pid, create_time = self._node_identity()
        if pid is None or pid == self.pid:
            return False
        self.pid, self.create_time = pid, create_time
        return True


def run_foreground(site: NodeSite, argv: Sequence[str], *, assignments: Mapping[str, str] | None = None,
                   extra_env: Mapping[str, str] | None = None, stderr: IO[str] | None = None,
                   verb: str = "exec", **popen_kwargs: Any) -> int:
    """Run `argv` on the node until it ends: its exit status (127/126 when it cannot be executed).

    For a process of its own (`netemu exec`): the program dies with us, we watch
    the node for restarts, SIGTERM/SIGHUP stop it. Messages go to `stderr` as `netemu: VERB: ...`.
    """
    stderr = stderr or sys.stderr
    main_thread = threading.current_thread() is threading.main_thread()
    previous: dict[int, Any] = {}
    if main_thread:   # from before the start: a Ctrl-C as soon as the program runs must not end us
        for signum, handler in ((signal.SIGINT, signal.SIG_IGN), (signal.SIGQUIT, signal.SIG_IGN),
                                (signal.SIGTERM, _stop), (signal.SIGHUP, _stop)):
            previous[signum] = signal.signal(signum, handler)
    guard = Guard()
    try:
        try:
            program = start(site, argv, assignments={**(extra_env or {}), **(assignments or {})}, guard=guard,
                            parent_death=main_thread, foreground=main_thread, **popen_kwargs)
        except OSError as error:
            code, message = describe_spawn_error(argv, error)
            print(f"netemu: {verb}: {message}", file=stderr)
            return code
        except (ProgramError, ValueError) as error:
            print(f"netemu: {verb}: {error}", file=stderr)
            return 1
        return _wait(program, _NodeWatch(site), stderr, verb)
    except _Stop as stopped:      # during the start: the program, if any, is stopped by start's clean-up
        return 128 + stopped.signum
    finally:
        guard.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop(signum: int, frame: object) -> None:
    raise _Stop(signum)


def _wait(program: Program, watch: _NodeWatch, stderr: IO[str], verb: str) -> int:
    try:
        while True:
            if program.popen.poll() is not None:
                return exit_status(program.popen.returncode)
            if not watch.emulation_alive():
                print(f"netemu: {verb}: emulation {program.site.emulation} is gone: stopping {program.record.argv[0]}",
                      file=stderr)
                program.stop()
                return exit_status(program.popen.returncode) if program.popen.returncode is not None else 1
            if _handed_to_restarted_node(program, watch, stderr, verb):
                continue
            if not watch.node_down():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    program.popen.wait(WATCH_INTERVAL)
                continue
            # The node is gone: its calls are ours to answer (ENETDOWN) until it is restarted. A call
            # that wakes us is answered only if the state file still shows no new node.
            select.select([program.listener], [], [], DOWN_INTERVAL)
            if not _handed_to_restarted_node(program, watch, stderr, verb):
                answer_calls(program.listener)
    except _Stop as stopped:
        program.stop()
        return 128 + stopped.signum
    finally:
        if program.popen.returncode is None and program.popen.poll() is None:
            program.stop()
        program.release()


def _handed_to_restarted_node(program: Program, watch: _NodeWatch, stderr: IO[str], verb: str) -> bool:
    """If the node runs again under a new pid, hand it the program's listener (True)."""
    if not watch.restarted():
        return False
    try:
        program.hand()
    except Exception as error:  # noqa: BLE001 - the node may be going down again
        print(f"netemu: {verb}: could not hand the program to the restarted {program.site.node}: {error}",
              file=stderr)
    return True


def attach(site: NodeSite, *, stderr: IO[str] | None = None) -> int:
    """The user's shell on the node (`netemu attach`): interactive on a terminal, a script reader on a pipe."""
    interactive = os.isatty(0)
    argv, extra = attach_argv(site, interactive)
    try:
        return run_foreground(site, argv, extra_env=extra, stderr=stderr, verb="attach")
    finally:
        reclaim_terminal(0)


def cli_run(net: Any, node: str, argv: Sequence[str], out: IO[str], script: bool) -> int:
    """`netemu> h1 CMD ARGS`: run CMD on the node of the CLI's own emulation, output to `out`.

    A scripted CLI (stdin not a terminal) gives the program no stdin: it must not
    eat the lines of the script. The program is one of the emulation's own
    (`node.exec`), so teardown and `restart` treat it as theirs.
    """
    stdin = subprocess.DEVNULL if script else None
    try:
        fileno = out.fileno()
    except (AttributeError, OSError, ValueError):
        fileno = None
    out.flush()
    if fileno is not None and _remote(net, node):
        return _relay_remote(net, node, list(argv), fileno, script)
    try:
        if fileno is not None:
            process = net[node].exec(list(argv), stdin=stdin, stdout=fileno, stderr=fileno)
            return _wait_cli(process)
        process = net[node].exec(list(argv), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, errors="replace")
        assert process.stdout is not None
        for line in process.stdout:
            out.write(line)
        out.flush()
        return _wait_cli(process)
    except OSError as error:
        code, message = describe_spawn_error(argv, error)
        out.write(f"{message}\n")
        return code


def _wait_cli(process: subprocess.Popen) -> int:
    """Wait for the program with SIGINT ignored here (the terminal's Ctrl-C reaches the program)."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
    try:
        return exit_status(process.wait())
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
        reclaim_terminal(0)


def _remote(net: Any, node: str) -> bool:
    """A node of another machine of a cluster emulation (docs/cluster.md)."""
    cluster = getattr(net, "cluster", None)
    return cluster is not None and not cluster.is_local(node)


def _relay_remote(net: Any, node: str, argv: list[str] | None, fileno: int, script: bool) -> int:
    """The program on a node of another machine, through its agent: Ctrl-C and the terminal follow it
    (control/remote_exec.py attach_remote), as they follow a local one."""
    from .remote_exec import attach_remote

    stdin_fd = os.open(os.devnull, os.O_RDONLY) if script else 0
    try:
        return attach_remote(net.cluster.relay_caller(node, "exec_call"), node, argv, pty=None,
                             stdin_fd=stdin_fd, stdout_fd=fileno, stderr_fd=fileno,
                             verb="attach" if argv is None else "exec")
    finally:
        if script:
            os.close(stdin_fd)


def cli_attach(net: Any, node: str) -> int:
    """`netemu> attach h1`: the shell on the node; back to the prompt when it exits."""
    if _remote(net, node):
        return _relay_remote(net, node, None, 1, False)
    site = net[node].site()
    argv, extra = attach_argv(site, interactive=True)
    env = {**os.environ, **extra}
    try:
        process = net[node].exec(argv, env=env)
    except OSError as error:
        code, message = describe_spawn_error(argv, error)
        print(f"netemu: attach: {message}", file=sys.stderr)
        return code
    return _wait_cli(process)
