"""The host agent: one Ray actor per machine of a cluster emulation, the supervisor's hands there.

Before changing this file, read docs/cluster.md, control/zygote.py (the process
tree and its signal chain, which the agent reuses unchanged) and control/cluster.py
(the controller's side, which creates agents and speaks to them).

The agent is a plain class here; control/cluster.py turns it into a Ray actor
(`ray.remote(HostAgent)`), pinned to its Ray node by node affinity, named
``netemu.<emulation>.<index>`` in namespace ``netemu``, threaded (`max_concurrency`)
so that the controller's long poll of `events` never waits behind a `spawn_many`.
Nothing in this module imports Ray at import time.

On its machine the agent does what the supervisor does on one: it holds a run
directory of its own (``<emulation>.<index>`` beside single-machine ones, same layout:
ipc sockets, logs, the hosts file), starts the zygote from a thread of its own that
lives until `stop` (PR_SET_PDEATHSIG follows that thread), asks it to fork the
processes placed here, and queues every exit with the last lines of the process's log
for the controller's `events` long poll.

No orphans on any machine:
* the agent dies (killed, its Ray node lost, or its foreground controller's job ended,
  which ends the job's actors): its zygote gets PR_SET_PDEATHSIG and EOF, and takes
  every child down (control/zygote.py);
* the controller vanishes while the agent lives (a detached agent, whose lifetime Ray
  does not tie to the controller): nobody polls `events` any more, and after
  `controller_grace` seconds the agent tears its processes down and exits by itself.
"""
from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from .rundir import RunDir, read_log_tail
from .zygote_client import ZygoteClient, ZygoteError

log = logging.getLogger(__name__)

CONTROLLER_GRACE = 10.0   # seconds without a poll from the controller before the agent tears down
LOG_TAIL_LINES = 20


def _answered(outcome: Exception) -> bool:
    """An error reply still means the process listens (a timeout or an abort does not)."""
    from bus.transport import ControlTimeout

    return not isinstance(outcome, ControlTimeout)


def agent_name(emulation: str, index: int) -> str:
    """The Ray actor name of machine `index`'s agent (namespace AGENT_NAMESPACE)."""
    return f"netemu.{emulation}.{index}"


AGENT_NAMESPACE = "netemu"


def machine_run_name(emulation: str, index: int) -> str:
    """The run directory name of an emulation's machine `index`, beside single-machine ones."""
    return f"{emulation}.{index}"


class HostAgent:
    """One machine's share of a cluster emulation: its run directory, zygote and processes."""

    def __init__(self, emulation: str, index: int, run_base: str | None = None,
                 controller_grace: float = CONTROLLER_GRACE, *, preload: list[str] | None = None,
                 grace: float = 1.0, hosts: str = "") -> None:
        self.emulation = emulation
        self.index = index
        self.run_base = run_base
        self.controller_grace = controller_grace
        self.run_dir: RunDir | None = None
        self._zygote: ZygoteClient | None = None
        self._zygote_thread: threading.Thread | None = None
        self._release_zygote_thread = threading.Event()
        self._names: dict[int, str] = {}          # pid -> process name, for exit events
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._lock = threading.Lock()
        self._last_poll = time.monotonic()
        self._stopped = False
        self._relay: Any = None                   # control.remote_exec.ExecRelay, made at start
        self._sockets: Any = None                 # control.remote_socket.SocketRelay, made at start
        self._rehands: dict[str, tuple[threading.Event, threading.Thread]] = {}
        self._zygote_started = threading.Event()
        self._zygote_failure: list[BaseException] = []
        self._zygote_timeout = 30.0
        self._info: dict[str, Any] | None = None
        self._relay_lock = threading.Lock()       # makes the relays once (not _lock: node_alive takes it)
        self._watchdog = threading.Thread(target=self._watch_controller, name="controller-watch", daemon=True)
        self._watchdog.start()
        if preload is not None:  # begin at once: the zygote boots while Ray still creates the other agents
            self.start(preload, grace, hosts)

    # -- life cycle --------------------------------------------------------------------------

    def start(self, preload: list[str], grace: float = 1.0, hosts: str = "", timeout: float = 30.0) -> dict[str, Any]:
        """Lock this machine's run directory, write the hosts file, start the zygote; returns at once
        (the zygote imports while the controller plans), `ready()` waits for it. Once only: again, the
        same answer."""
        if self._info is not None:
            return self._info
        self.run_dir = RunDir.acquire(machine_run_name(self.emulation, self.index), base=self.run_base)
        Path(self.run_dir.path, "hosts").write_text(hosts, encoding="utf-8")
        started = self._zygote_started
        failure = self._zygote_failure

        def own_the_zygote() -> None:
            # PR_SET_PDEATHSIG follows the thread that forked the zygote: this one lives until stop().
            try:
                # Ray runs workers at RAY_worker_niceness (15): the emulation's processes, forked by the
                # zygote started from this thread, run at 0 as on one machine (nice is per thread).
                try:
                    os.setpriority(os.PRIO_PROCESS, 0, 0)
                except OSError as error:
                    log.warning("machine %d: the emulation's processes stay at nice %d (%s)", self.index,
                                os.getpriority(os.PRIO_PROCESS, 0), error)
                self._zygote = ZygoteClient(self._on_exit, self._on_zygote_lost)
                assert self.run_dir is not None
                self._zygote.start(self.run_dir.log_path("zygote"), list(preload), grace, timeout)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                failure.append(exc)
            finally:
                started.set()
            self._release_zygote_thread.wait()

        self._zygote_thread = threading.Thread(target=own_the_zygote, name="zygote-owner", daemon=True)
        self._zygote_thread.start()
        self._zygote_timeout = timeout + 5.0
        self._info = {"ip": self.ip(), "hostname": socket.gethostname(), "run_dir": str(self.run_dir.path),
                      "pid": os.getpid()}
        return self._info

    def _exec_relay(self) -> Any:
        """control/remote_exec.py's relay, made on the first program."""
        from .remote_exec import ExecRelay

        return self._relay_made("_relay", lambda run_dir: ExecRelay(self.emulation, run_dir,
                                                                    node_alive=self._node_alive))

    def _socket_relay(self) -> Any:
        """control/remote_socket.py's relay, made on the first socket."""
        from .remote_socket import SocketRelay

        return self._relay_made("_sockets", SocketRelay)

    def _relay_made(self, attribute: str, make: Any) -> Any:
        with self._relay_lock:  # once, even when the first two calls come at once
            if getattr(self, attribute) is None:
                if self.run_dir is None or self._stopped:
                    raise RuntimeError(f"machine {self.index} is not running")
                setattr(self, attribute, make(str(self.run_dir.path)))
            return getattr(self, attribute)

    def ready(self) -> dict[str, Any]:
        """Wait for the zygote `start` began: its pid and the modules it could not preload."""
        self._zygote_started.wait(self._zygote_timeout)
        if self._zygote_failure or self._zygote is None or self.run_dir is None:
            tail = read_log_tail(self.run_dir.log_path("zygote")) if self.run_dir is not None else []
            raise RuntimeError(f"machine {self.index}: the zygote did not start: {self._zygote_failure[:1]} "
                               f"{tail[-3:]}")
        return {"zygote_pid": self._zygote.pid, "preload_failures": dict(self._zygote.preload_failures)}

    @staticmethod
    def ip() -> str:
        import ray  # the agent runs only inside Ray

        return ray.util.get_node_ip_address()

    def stop(self, grace: float = 0.5) -> list[int]:
        """Stop programs, the zygote and its children; release the run directory. Leftover pids."""
        with self._lock:
            if self._stopped:
                return []
            self._stopped = True
        leftovers: list[int] = []
        if self._sockets is not None:
            self._sockets.close_all()
        if self._relay is not None:
            with contextlib.suppress(Exception):
                self._relay.stop_all()
        if self.run_dir is not None:
            from .program_guard import stop_registered

            with contextlib.suppress(OSError):
                leftovers += stop_registered(str(self.run_dir.path))
        if self._zygote is not None:
            with contextlib.suppress(ZygoteError, OSError, AssertionError):
                leftovers += self._zygote.stop(grace)
        self._release_zygote_thread.set()
        if self.run_dir is not None:
            self.run_dir.release(keep_logs=False)
        return leftovers

    def ping(self) -> float:
        self._last_poll = time.monotonic()
        return time.time()

    # -- processes -----------------------------------------------------------------------------

    def reserve_ports(self, count: int) -> list[int]:
        """`count` free TCP ports on this machine's address, for tcp:// endpoints of its processes.

        Bound all at once (so they differ), then closed: the kernel does not hand a port it
        just gave to bind(0) to the next bind(0), and our processes bind them within seconds.
        """
        held = []
        try:
            for _ in range(count):
                probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held.append(probe)
                probe.bind((self.ip(), 0))
            return [probe.getsockname()[1] for probe in held]
        finally:
            for probe in held:
                probe.close()

    def spawn_many(self, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Fork each {"name", "target", "config"}: [{"ok", "pid"} | {"ok": False, "error"}] in order."""
        self._zygote_started.wait(self._zygote_timeout)
        if self._zygote is None or self.run_dir is None or self._stopped:
            return [{"ok": False, "error": f"machine {self.index} is not running"} for _ in specs]
        pending = [self._zygote.request({"op": "spawn", "target": spec["target"], "config": spec["config"],
                                         "log": str(self.run_dir.log_path(spec["name"]))},
                                        on_reply=self._registrar(spec["name"]))
                   for spec in specs]
        replies = []
        for request in pending:
            try:
                reply = request.wait(10.0)
                replies.append({"ok": True, "pid": reply["pid"]})
            except ZygoteError as exc:
                replies.append({"ok": False, "error": str(exc)})
        return replies

    def wait_ready(self, endpoints: dict[str, str], timeout: float) -> dict[str, list[str]]:
        """Which of these processes answer `status` on their machine-local ipc endpoint (no CURVE
        handshake, no network round trip), within `timeout`; returns early when one of them exits."""
        from bus.transport import ControlClient

        names = list(endpoints)
        with self._lock:
            running = set(self._names.values())
        gone = [name for name in names if name not in running]
        if gone:
            return {"ready": []}

        def exited() -> bool:
            with self._lock:
                return any(name not in self._names.values() for name in names)
        outcomes = ControlClient.fan_out([(endpoints[name], "status", None) for name in names], timeout,
                                         abort=exited, retry_interval=1.0)
        return {"ready": [name for name, outcome in zip(names, outcomes)
                          if not isinstance(outcome, Exception) or _answered(outcome)]}

    def _registrar(self, name: str) -> Any:
        def register(reply: dict) -> None:  # in the zygote reader thread, before any exit of that pid
            if reply.get("ok"):
                with self._lock:
                    self._names[reply["pid"]] = name
        return register

    def kill(self, pid: int, sig: int) -> bool:
        """Signal a child of our zygote (only unreaped children: no pid reuse)."""
        if self._zygote is None:
            return False
        with contextlib.suppress(ZygoteError):
            self._zygote.call({"op": "kill", "pid": int(pid), "sig": int(sig)}, 2.0)
            return True
        return False

    def events(self, timeout: float = 0.5) -> list[dict[str, Any]]:
        """The controller's long poll: exits since the last call (waits up to `timeout` for one)."""
        self._last_poll = time.monotonic()
        found = []
        try:
            found.append(self._events.get(timeout=timeout))
            while True:
                found.append(self._events.get_nowait())
        except queue.Empty:
            pass
        self._last_poll = time.monotonic()
        return found

    def _on_exit(self, pid: int, returncode: int | None, sig: int | None) -> None:
        with self._lock:
            name = self._names.pop(pid, None)
        if name is None or self.run_dir is None:
            return
        tail = read_log_tail(self.run_dir.log_path(name), LOG_TAIL_LINES)
        self._events.put({"pid": pid, "returncode": returncode, "signal": sig, "tail": tail})

    def _on_zygote_lost(self) -> None:
        with self._lock:
            lost, self._names = self._names, {}
        self._events.put({"zygote_lost": True, "pids": list(lost)})

    # -- files ----------------------------------------------------------------------------------

    def read_file(self, path: str, remove: bool = False) -> bytes | None:
        """A file of this machine's run directory (a capture, a log); None when it does not exist."""
        assert self.run_dir is not None
        target = Path(path).resolve()
        if self.run_dir.path.resolve() not in target.parents:
            raise PermissionError(f"{path} is outside {self.run_dir.path}")
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            return None
        if remove:
            target.unlink(missing_ok=True)
        return data

    # -- programs on this machine's nodes (control/remote_exec.py) ------------------------------

    def exec_call(self, method: str, kwargs: dict[str, Any]) -> Any:
        """One call of the exec relay: start, io, signal, resize, close."""
        if method not in ("start", "io", "signal", "resize", "close", "jobs"):
            raise ValueError(f"no exec method {method!r}")
        self._last_poll = time.monotonic()
        return getattr(self._exec_relay(), method)(**kwargs)

    def socket_call(self, method: str, kwargs: dict[str, Any]) -> Any:
        """One call of the socket relay (control/remote_socket.py): create, op, close."""
        if method not in ("create", "op", "close"):
            raise ValueError(f"no socket method {method!r}")
        self._last_poll = time.monotonic()
        return getattr(self._socket_relay(), method)(**kwargs)

    def _node_alive(self, node: str) -> bool:
        with self._lock:
            return node in self._names.values()

    def rehand_begin(self, node: str, timeout: float = 60.0) -> None:
        """A node of this machine is about to restart: its programs' calls wait (ENETDOWN while it is
        down) until `rehand_end`, which hands them to the new kernel (ProgramTable.rehand)."""
        restarted = threading.Event()
        paused = threading.Event()

        def restart() -> None:
            paused.set()
            restarted.wait(timeout)
        thread = threading.Thread(target=self._exec_relay().rehand, args=(node, restart), name=f"rehand-{node}",
                                  daemon=True)
        self._rehands[node] = (restarted, thread)
        thread.start()
        paused.wait(timeout)

    def rehand_end(self, node: str) -> None:
        restarted, thread = self._rehands.pop(node)
        restarted.set()
        thread.join(30.0)

    # -- the controller's absence ---------------------------------------------------------------

    def _watch_controller(self) -> None:
        while not self._stopped:
            time.sleep(1.0)
            if self._zygote is not None and time.monotonic() - self._last_poll > self.controller_grace:
                log.warning("machine %d of %s: no word from the controller for %.0f s: tearing down",
                            self.index, self.emulation, self.controller_grace)
                self.stop()
                os.kill(os.getpid(), signal.SIGKILL)  # the actor's end; Ray reports it to anyone left
