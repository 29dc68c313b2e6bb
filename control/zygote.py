"""The zygote: one pre-imported Python process that forks every process of an emulation.

Why: a fresh interpreter with zmq and msgpack costs ~80 ms and ~12.5 MiB USS;
a fork of a parent that already imported them costs a few ms and ~1.5 MiB.
With 100-500 nodes that is the difference between seconds and minutes.

How it is started: as a *fresh interpreter* (`python -m control.zygote`),
by `control.zygote_client.ZygoteClient` for `control.supervisor`, never
forked from the launcher. The launcher may
already hold a ZeroMQ context or threads (pytest, a scenario script, the CLI),
and a forked ZeroMQ context is unusable in the child; the zygote itself never
creates a context nor starts a thread, so its forks are clean. It pre-imports
zmq, msgpack and the target modules it is given (`bus.switch`,
`nodes.kernel`...); a module that fails to import is reported, not fatal.
A preloaded module may define `zygote_warm_up()`, run once before the first
fork (see `warm_up`); it must not start a thread nor open a ZeroMQ context.

Protocol: a stream of msgpack maps over a Unix socketpair inherited as
`--fd`. Requests carry an `id` echoed in the reply::

    -> {"op": "spawn", "id": 1, "target": "bus.switch:run", "config": {...}, "log": "/RUN/log/lan1.log"}
    <- {"reply": 1, "ok": true, "pid": 4242}          or {"reply": 1, "ok": false, "error": "..."}
    -> {"op": "kill", "id": 2, "pid": 4242, "sig": 15}  (only our own, unreaped children: no PID reuse)
    -> {"op": "exit", "id": 3, "grace": 1.0}           (terminate children, then exit)
    -> {"op": "ping", "id": 4}                         <- {"reply": 4, "ok": true, "children": 12}
    <- {"event": "ready", "pid": ..., "preloaded": [...], "failed": {"module": "error"}}
    <- {"event": "exit", "pid": 4242, "returncode": 3 | None, "signal": 9 | None}

Every child exit is reaped (SIGCHLD through a wakeup pipe) and reported at once.

Process tree and signals, so nothing outlives the supervisor:

* the zygote runs in its own session (the supervisor starts it so), and its
  children stay in that process group: a Ctrl-C in the terminal reaches only
  the supervisor, which then stops the children in order;
* zygote: PR_SET_PDEATHSIG(SIGTERM) against the supervisor, EOF on the
  socketpair, and a periodic `getppid()` check all mean "the supervisor is
  gone": SIGTERM every child, wait `--grace` seconds, SIGKILL the rest and
  anything else in the process group (children's children), exit;
* child: PR_SET_PDEATHSIG(SIGKILL) against the zygote (checked right after,
  in case the zygote died during the fork), so a killed zygote takes its
  children with it. `config["parent_pid"]` is set to the zygote's pid, the
  child's real parent. A target may re-arm PDEATHSIG (bus.runtime asks for
  SIGTERM, to close its pcap cleanly); it then must honour SIGTERM.

The supervisor's side (`ZygoteClient`, which starts this process and reads
its messages in a thread) is control.zygote_client; finding and killing what
is left in the process group is control.proctree; PR_SET_PDEATHSIG is
bus.runtime's `set_parent_death_signal`, the one place that calls prctl.

Before changing this file, read prctl(2) (PR_SET_PDEATHSIG: it follows the
parent *thread*), signal(7) and Python's `signal.set_wakeup_fd`.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import random
import select
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import msgpack

from bus.runtime import set_parent_death_signal

from .proctree import group_members, kill_all

DEFAULT_PRELOAD = ("zmq", "msgpack", "selectors", "socket", "struct", "json", "logging", "heapq")
PARENT_CHECK_INTERVAL = 0.5  # seconds between getppid() checks


def resolve_target(target: str) -> Callable[[dict], Any]:
    """Import `module:function` and return the function (raises ValueError/ImportError)."""
    module_name, sep, function_name = target.partition(":")
    if not sep or not module_name or not function_name:
        raise ValueError(f"target must be 'module:function', got {target!r}")
    function = getattr(importlib.import_module(module_name), function_name, None)
    if not callable(function):
        raise ValueError(f"{target}: {function_name!r} is not a function of {module_name}")
    return function


def preload(modules: list[str]) -> tuple[list[str], dict[str, str]]:
    """Import `modules`; return the loaded ones and {module: error} for the others."""
    loaded, failed = [], {}
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a module not written yet must not stop the emulation
            failed[name] = f"{type(exc).__name__}: {exc}"
        else:
            loaded.append(name)
    return loaded, failed


def warm_up(modules: list[str]) -> dict[str, str]:
    """Call `zygote_warm_up()` of each loaded module that defines one; {module: error} for the failures.

    Code that runs before the fork is specialised (PEP 659 rewrites bytecode
    in place) in pages every child then shares; run in each child instead,
    the same rewriting makes a private copy of those pages in every one.
    """
    failed = {}
    for name in modules:
        hook = getattr(sys.modules.get(name), "zygote_warm_up", None)
        if not callable(hook):
            continue
        try:
            hook()
        except Exception as exc:  # a warm-up is an optimisation: never fatal
            failed[name] = f"{type(exc).__name__}: {exc}"
    return failed


def _exit_code(result: object) -> int:
    if result is None:
        return 0
    if isinstance(result, int) and not isinstance(result, bool) and 0 <= result <= 255:
        return result
    print(f"netemu: target returned {result!r}, not an exit code 0..255", file=sys.stderr)
    return 1


def _system_exit_code(exc: SystemExit) -> int:
    if exc.code is None or isinstance(exc.code, int):
        return _exit_code(exc.code)
    print(exc.code, file=sys.stderr)
    return 1


class Zygote:
    """The fork server loop: spawn requests in, pids and exit events out."""

    def __init__(self, sock: socket.socket, parent_pid: int, grace: float) -> None:
        self.sock = sock
        self.parent_pid = parent_pid
        self.grace = grace
        self.children: dict[int, str] = {}  # pid -> target, until reaped
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.running = True
        self.supervisor_gone = False
        self.wakeup_read, self.wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.wakeup_read, selectors.EVENT_READ)
        self.selector.register(sock, selectors.EVENT_READ)
        # The handlers do nothing: the C-level handler writes the signal number
        # into the wakeup pipe, and the loop acts on it outside signal context.
        signal.set_wakeup_fd(self.wakeup_write, warn_on_full_buffer=False)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, _note_signal)

    # -- the loop ------------------------------------------------------------

    def serve(self, loaded: list[str], failed: dict[str, str]) -> int:
        """Run until told to exit or until the supervisor is gone; returns the exit code."""
        self._send({"event": "ready", "pid": os.getpid(), "preloaded": loaded, "failed": failed})
        next_parent_check = time.monotonic() + PARENT_CHECK_INTERVAL
        while self.running:
            for key, _ in self.selector.select(timeout=PARENT_CHECK_INTERVAL):
                if key.fd == self.wakeup_read:
                    self._on_signals()
                else:
                    self._on_requests()
                if not self.running:
                    break
            if time.monotonic() >= next_parent_check:
                next_parent_check = time.monotonic() + PARENT_CHECK_INTERVAL
                if os.getppid() != self.parent_pid:
                    self._lost_supervisor()
            if self.supervisor_gone and self.running:
                self._lost_supervisor()
        return 0

    def _lost_supervisor(self) -> None:
        self.supervisor_gone = True
        self.terminate_children(self.grace)
        self.running = False

    def _on_signals(self) -> None:
        try:
            received = os.read(self.wakeup_read, 4096)
        except BlockingIOError:
            return
        if signal.SIGCHLD in received:
            self.reap()
        if any(signum in received for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)):
            self._lost_supervisor()  # PDEATHSIG, or someone deliberately stopping us

    def _on_requests(self) -> None:
        try:
            data = self.sock.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            self.supervisor_gone = True
            return
        self.unpacker.feed(data)
        for request in self.unpacker:
            if isinstance(request, dict):
                self._dispatch(request)
            if not self.running:
                return

    def _dispatch(self, request: dict) -> None:
        op, request_id = request.get("op"), request.get("id")
        try:
            if op == "spawn":
                pid = self.spawn(request["target"], request["config"], request["log"])
                self._send({"reply": request_id, "ok": True, "pid": pid})
            elif op == "kill":
                pid = request["pid"]
                if pid not in self.children:
                    raise ProcessLookupError(f"pid {pid} is not a live child of the zygote")
                os.kill(pid, request.get("sig", signal.SIGTERM))
                self._send({"reply": request_id, "ok": True})
            elif op == "exit":
                self.terminate_children(float(request.get("grace", self.grace)))
                self._send({"reply": request_id, "ok": True})
                self.running = False
            elif op == "ping":
                self._send({"reply": request_id, "ok": True, "children": len(self.children)})
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as exc:
            self._send({"reply": request_id, "ok": False, "error": f"{type(exc).__name__}: {exc}"})

    def _send(self, message: dict) -> None:
        if self.supervisor_gone:
            return
        try:
            self.sock.sendall(msgpack.packb(message, use_bin_type=True))
        except OSError:
            self.supervisor_gone = True

    # -- children ------------------------------------------------------------

    def spawn(self, target: str, config: dict, log_path: str) -> int:
        """Fork a child that runs `target(config)` with output to `log_path`; return its pid."""
        function = resolve_target(target)  # before the fork: a bad target is the caller's error
        sys.stdout.flush()
        sys.stderr.flush()
        zygote_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            self._become_child(function, config, log_path, zygote_pid)  # never returns
        self.children[pid] = target
        return pid

    def _become_child(self, function: Callable[[dict], Any], config: dict, log_path: str,
                      zygote_pid: int) -> None:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self.selector.close()
            os.close(self.wakeup_read)
            os.close(self.wakeup_write)
            self.sock.close()
            set_parent_death_signal(signal.SIGKILL)
            if os.getppid() != zygote_pid:
                os._exit(1)  # the zygote died before PDEATHSIG was armed
            log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            null_fd = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null_fd, 0)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.close(log_fd)
            os.close(null_fd)
            # Line-buffered so a crash's last words are in the log tail.
            with contextlib.suppress(Exception):
                sys.stdout.reconfigure(line_buffering=True)
            random.seed()  # os.fork reseeds too; explicit, as every process must differ
            child_config = dict(config)
            child_config["parent_pid"] = zygote_pid
            try:
                code = _exit_code(function(child_config))
            except SystemExit as exc:
                code = _system_exit_code(exc)
            except KeyboardInterrupt:
                code = 130
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os._exit(code)  # never return into the zygote's loop

    def reap(self) -> None:
        """Collect every exited child and report it."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.pop(pid, None)
            if os.WIFSIGNALED(status):
                event = {"event": "exit", "pid": pid, "returncode": None, "signal": os.WTERMSIG(status)}
            else:
                event = {"event": "exit", "pid": pid, "returncode": os.WEXITSTATUS(status), "signal": None}
            self._send(event)

    def terminate_children(self, grace: float) -> None:
        """SIGTERM every child, wait up to `grace` seconds, SIGKILL the rest, reap all;
        then SIGKILL whatever else is left in our process group (children's children)."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 1.0)):
            self.reap()
            for pid in list(self.children):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while self.children and time.monotonic() < deadline:
                select.select([self.wakeup_read], [], [], 0.01)  # woken early by SIGCHLD
                self._drain_wakeup()
                self.reap()
            if not self.children:
                break
        if os.getpgrp() == os.getpid():  # the group is ours alone (a new session)
            kill_all(group_members(os.getpid(), exclude=os.getpid()))

    def _drain_wakeup(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.wakeup_read, 4096)


def _note_signal(signum: int, frame: object) -> None:
    """Signal handler that does nothing; the wakeup pipe carries the signal number."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m control.zygote --fd N --parent PID [--preload m1,m2]`."""
    parser = argparse.ArgumentParser(prog="python -m control.zygote")
    parser.add_argument("--fd", type=int, required=True, help="inherited socketpair end")
    parser.add_argument("--parent", type=int, required=True, help="supervisor pid")
    parser.add_argument("--preload", default="", help="comma-separated modules to import")
    parser.add_argument("--sys-path", default="[]", help="JSON list put in front of sys.path")
    parser.add_argument("--grace", type=float, default=1.0, help="SIGTERM-to-SIGKILL delay at teardown")
    args = parser.parse_args(argv)

    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != args.parent:
        return 0  # the supervisor died while we were starting
    extra = [entry for entry in json.loads(args.sys_path) if isinstance(entry, str)]
    sys.path[:] = extra + [entry for entry in sys.path if entry not in extra]
    sock = socket.socket(fileno=args.fd)
    sock.set_inheritable(False)
    zygote = Zygote(sock, args.parent, args.grace)
    modules = list(DEFAULT_PRELOAD) + [m for m in args.preload.split(",") if m]
    loaded, failed = preload(modules)
    for name, error in failed.items():
        print(f"zygote: could not preload {name}: {error}", file=sys.stderr)
    for name, error in warm_up(loaded).items():
        print(f"zygote: the warm-up of {name} failed: {error}", file=sys.stderr)
    if threading.active_count() > 1:
        print("zygote: a preloaded module started a thread; forks may misbehave", file=sys.stderr)
    # Objects that exist now are shared with every child: keep the collector
    # from touching (and so copying) their pages.
    gc.collect()
    gc.freeze()
    return zygote.serve(loaded, failed)


def __getattr__(name: str) -> Any:
    """`ZygoteClient`/`ZygoteError` moved to control.zygote_client; still importable from here,
    without loading the client into the zygote process itself."""
    if name in ("ZygoteClient", "ZygoteError"):
        from . import zygote_client
        return getattr(zygote_client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    sys.exit(main())
