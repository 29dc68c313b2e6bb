"""The supervisor: starts every process of an emulation, watches them, tears them down.

One `Supervisor` per emulation. It owns the run directory (control.rundir),
starts the zygote (control.zygote, whose header explains the process tree and
the signal chain), asks it to fork each process, and listens on the zygote's
socket in a reader thread, so any exit is known within milliseconds:
`on_crash(event)` is called (in a thread of its own, so it may call
`restart()`) for exits nobody asked for, and every exit is queued for
`poll_events()`. Methods may be called from several threads (the CLI's and
on_crash's), just not on the same process from two threads at once.

Control requests (`status` for readiness, `shutdown` at teardown) go to many
processes at once through `ControlClient.fan_out` (bus.transport): one DEALER
per process in flight, a bounded window, one poller; 500 processes cost one
round of polling, not 500. The value types (`ProcessHandle`, `ExitEvent`,
`StopReport`, the errors) and the signal handling are in control.processes.

Teardown order (`stop`): `shutdown` to everyone at once; at half the timeout
SIGTERM the ones still running; at the deadline SIGKILL the rest; then stop
the zygote, kill anything left in its process group (a child's own children),
and remove the run directory. If this process is killed outright, the
zygote's PR_SET_PDEATHSIG and its EOF watch take everything down instead.

Call `start()` from the main thread (or another thread that lives as long as
the emulation): PR_SET_PDEATHSIG fires when the thread that started the
zygote ends, not only the process.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import zmq

from bus.transport import ControlClient

from .processes import (ExitEvent, ProcessExited, ProcessHandle, ProcessState, StopReport, SupervisorError,
                        Terminated, defer_signals, install_signal_handlers)
from .rundir import RunDir, check_name, process_identity, read_log_tail
from .zygote_client import ZygoteClient, ZygoteError

__all__ = ["DEFAULT_TARGET_MODULES", "ExitEvent", "ProcessExited", "ProcessHandle", "ProcessState", "StopReport",
           "Supervisor", "SupervisorError", "Terminated", "ZYGOTE_NAME", "install_signal_handlers"]

log = logging.getLogger(__name__)

# Modules the zygote imports up front; missing ones are reported, not fatal.
DEFAULT_TARGET_MODULES = ("bus.transport", "bus.device", "bus.switch", "bus.hub", "bus.p2p",
                          "nodes.kernel")
ZYGOTE_NAME = "zygote"  # its log is log/zygote.log; no process may take the name


class Supervisor:
    """Starts, watches and stops the processes of one emulation through a zygote."""

    def __init__(self, name: str, run_dir: RunDir | str | os.PathLike[str] | None = None, *,
                 preload: Iterable[str] = DEFAULT_TARGET_MODULES,
                 on_crash: Callable[[ExitEvent], None] | None = None,
                 topology: str | None = None, keep_logs: bool = False,
                 grace: float = 1.0, handle_signals: bool = True,
                 zygote_factory: Callable[..., Any] = ZygoteClient) -> None:
        self.name = check_name(name)
        self.preload = list(preload)
        self.on_crash = on_crash
        self.topology = topology
        self.keep_logs = keep_logs
        self.grace = grace  # the zygote's SIGTERM-to-SIGKILL delay if we vanish
        self.handle_signals = handle_signals
        # ZygoteClient, or control.cluster.ClusterZygote: the same interface, one agent per machine behind it
        self.zygote_factory = zygote_factory
        self.run_dir: RunDir | None = run_dir if isinstance(run_dir, RunDir) else None
        self._run_dir_path = None if run_dir is None or isinstance(run_dir, RunDir) else Path(run_dir)
        self._handles: dict[str, ProcessHandle] = {}
        self._by_pid: dict[int, ProcessHandle] = {}
        self._lock = threading.Lock()
        self._exited = threading.Condition(self._lock)  # notified on every exit
        self._events: queue.Queue[ExitEvent] = queue.Queue()
        # on_crash runs in its own thread, so it may call restart() & co., which
        # wait for the zygote's reader thread.
        self._crashes: queue.Queue[ExitEvent | threading.Event | None] = queue.Queue()
        self._dispatcher: threading.Thread | None = None
        self._exit_count = 0
        self._zygote: Any = None
        self._context: zmq.Context | None = None
        self._stopping = False
        self._stopped = False
        self._restore_signals: Callable[[], None] | None = None
        self._state_lock = threading.Lock()  # save_state runs in the caller's and the on_crash thread
        self.extra_state: dict[str, Any] = {}  # more of the state file (a cluster's machines and keys)
        self._tails: dict[str, list[str]] = {}  # the last exit's log tail, as an agent sent it

    # -- life cycle ----------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        """Lock the run directory and start the zygote; returns when it has pre-imported."""
        if self._zygote is not None:
            raise SupervisorError("already started")
        if self.run_dir is None:
            self.run_dir = RunDir.acquire(self.name, path=self._run_dir_path)
        self._zygote = self.zygote_factory(self._on_exit, self._on_zygote_lost)
        try:
            self._zygote.start(self.run_dir.log_path(ZYGOTE_NAME), self.preload, self.grace, timeout)
        except BaseException as exc:
            tail = "\n".join(read_log_tail(self.run_dir.log_path(ZYGOTE_NAME)))
            self._zygote.abandon()
            self.run_dir.release(keep_logs=True)  # the zygote's log tells why
            self._stopped = True
            if isinstance(exc, ZygoteError):
                raise SupervisorError(f"{exc}\n{tail}") from exc
            raise
        for module, error in self._zygote.preload_failures.items():
            log.debug("%s: zygote could not preload %s: %s", self.name, module, error)
        self._context = zmq.Context()
        self._dispatcher = threading.Thread(target=self._dispatch_crashes, name=f"on_crash-{self.name}",
                                            daemon=True)
        self._dispatcher.start()
        # A script that forgets stop() still tears down on a normal exit.
        atexit.register(self.stop)
        self.save_state()

    @property
    def preload_failures(self) -> dict[str, str]:
        """Modules the zygote could not import: {module: error}."""
        return self._zygote.preload_failures if self._zygote is not None else {}

    @property
    def zygote_pid(self) -> int | None:
        return self._zygote.pid if self._zygote is not None else None

    def __enter__(self) -> Supervisor:
        self.start()
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            self._restore_signals = install_signal_handlers()
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.stop()
        finally:
            if self._restore_signals is not None:
                self._restore_signals()
                self._restore_signals = None

    # -- spawning ------------------------------------------------------------

    def spawn(self, name: str, target: str, config: Mapping[str, Any]) -> ProcessHandle:
        """Fork `target(config)` ("module:function") as process `name`; see spawn_many."""
        return self.spawn_many([(name, target, config)])[0]

    def spawn_many(self, specs: Iterable[tuple[str, str, Mapping[str, Any]]]) -> list[ProcessHandle]:
        """Fork several processes, pipelining the requests to the zygote.

        `config` gets `name` and a `control` endpoint in the run directory unless
        it has them; the zygote sets `parent_pid` to itself (the real parent).
        """
        self._require_running()
        assert self.run_dir is not None
        handles = []
        for name, target, config in specs:
            check_name(name, "process")
            if name == ZYGOTE_NAME:
                raise ValueError(f"{ZYGOTE_NAME!r} is reserved for the supervisor's fork server")
            config = dict(config)
            config.setdefault("name", name)
            config.setdefault("control", self.run_dir.ipc_endpoint(f"{name}.ctl"))
            with self._lock:
                existing = self._handles.get(name)
                if existing is not None and existing.alive:
                    raise ValueError(f"process {name!r} is already running (pid {existing.pid})")
                handle = ProcessHandle(name, target, config, self.run_dir.log_path(name))
                self._handles[name] = handle
            handles.append(handle)
        self._fork(handles)
        return handles

    def _fork(self, handles: list[ProcessHandle]) -> None:
        assert self._zygote is not None
        requests = [self._zygote.request({"op": "spawn", "target": h.target, "config": h.config,
                                          "log": str(h.log_path)}, on_reply=self._registrar(h))
                    for h in handles]
        errors = []
        for handle, request in zip(handles, requests):
            try:
                request.wait(10.0)
            except ZygoteError as exc:
                with self._lock:
                    if self._handles.get(handle.name) is handle and handle.pid is None:
                        del self._handles[handle.name]
                errors.append(f"{handle.name}: {exc}")
        if errors:
            raise SupervisorError("could not spawn " + "; ".join(errors))

    def _registrar(self, handle: ProcessHandle) -> Callable[[dict], None]:
        # Runs in the reader thread before the zygote's next message, so the
        # child's exit event can never arrive for a pid we do not know yet.
        def register(reply: dict) -> None:
            if reply.get("ok"):
                with self._lock:
                    handle.pid = reply["pid"]
                    handle.started_at = time.monotonic()
                    # a cluster's zygote names children machine/pid: pids repeat across machines
                    self._by_pid[reply.get("key", handle.pid)] = handle
        return register

    def wait_ready(self, names: Iterable[str] | None = None, timeout: float = 10.0,
                   progress: Callable[[int, int], None] | None = None) -> None:
        """Wait until each process answers `status` on its control endpoint, all at once.

        `progress(ready, total)` is called as they come up. Raises ProcessExited
        as soon as one of them exits, TimeoutError naming the slow ones.
        """
        self._require_running()
        with self._lock:
            handles = {name: self._handles[name] for name in (self._handles if names is None else names)}
        total = len(handles)
        waiting = {n: h for n, h in handles.items() if h.state is not ProcessState.READY}
        done = total - len(waiting)
        if progress is not None:
            progress(done, total)
        def first_exited() -> ProcessHandle | None:
            return next((h for h in waiting.values() if not h.alive), None)

        exits_seen = self._exit_count

        def abort() -> bool:
            nonlocal exits_seen
            if self._exit_count == exits_seen:
                return False  # cheap test first: nothing exited anywhere
            exits_seen = self._exit_count
            return first_exited() is not None

        order = list(waiting)

        def on_reply(index: int, outcome: Any) -> None:  # any answer, even an error, means it listens
            nonlocal done
            with self._lock:
                if waiting[order[index]].state is ProcessState.STARTING:
                    waiting[order[index]].state = ProcessState.READY
            done += 1
            if progress is not None:
                progress(done, total)

        if first_exited() is None:
            local = getattr(self._zygote, "wait_ready", None)  # a cluster's: each machine asks its own
            if local is not None:
                local([waiting[n] for n in order], timeout, lambda index: on_reply(index, None))
            else:
                ControlClient.fan_out([(waiting[n].control, "status", None) for n in order], timeout,
                                      context=self._context, on_reply=on_reply, abort=abort, retry_interval=1.0)
        exited = first_exited()
        if exited is not None:
            raise ProcessExited(self._exit_event(exited, exited.exit_expected))
        slow = [n for n, h in waiting.items() if h.state is not ProcessState.READY]
        if slow:
            shown = ", ".join(slow[:10]) + (f" and {len(slow) - 10} more" if len(slow) > 10 else "")
            raise TimeoutError(f"not ready after {timeout}s: {shown}")
        self.save_state()

    # -- running -------------------------------------------------------------

    @property
    def processes(self) -> dict[str, ProcessHandle]:
        """A snapshot of every process by name."""
        with self._lock:
            return dict(self._handles)

    def __getitem__(self, name: str) -> ProcessHandle:
        return self._handles[name]

    def poll_events(self, timeout: float = 0.0) -> list[ExitEvent]:
        """Exit events since the last call; waits up to `timeout` for the first one."""
        events = []
        try:
            events.append(self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait())
            while True:
                events.append(self._events.get_nowait())
        except queue.Empty:
            pass
        return events

    def call(self, name: str, op: str, timeout: float = 2.0, **args: Any) -> Any:
        """One control request to process `name`: its `result`, or ControlError/ControlTimeout."""
        self._require_running()
        with ControlClient(self._handles[name].control, timeout, context=self._context) as client:
            return client.request(op, args)

    def kill(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Send `sig` to process `name`; its exit is then reported as expected, not a crash."""
        self._require_running()
        handle = self._handles[name]
        if not handle.alive or handle.pid is None:
            raise ProcessLookupError(f"{name} is not running")
        handle.exit_expected = True
        self._signal(handle, sig)

    def send_signal(self, name: str, sig: int) -> None:
        """Send `sig` to process `name` (SIGSTOP, SIGCONT...) without expecting it to exit."""
        self._require_running()
        self._signal(self._handles[name], sig)

    def _signal(self, handle: ProcessHandle, sig: int) -> None:
        # Through the zygote: it signals only children it has not reaped, so a
        # recycled pid can never be hit.
        assert self._zygote is not None
        with contextlib.suppress(ZygoteError):
            self._zygote.call({"op": "kill", "pid": handle.pid, "sig": int(sig),
                               "machine": handle.config.get("machine")}, 2.0)

    def restart(self, name: str, timeout: float = 3.0, ready_timeout: float | None = None) -> ProcessHandle:
        """Stop `name` if it runs, then fork it again with the same target and config."""
        self._require_running()
        handle = self._handles[name]
        if handle.alive:
            self._terminate([handle], timeout, StopReport())
        with self._lock:
            handle.pid = None
            handle.state = ProcessState.STARTING
            handle.returncode = handle.signal = None
            handle.exit_expected = False
            handle.restarts += 1
        self._fork([handle])
        if ready_timeout is not None:
            self.wait_ready([name], ready_timeout)
        else:
            self.save_state()
        return handle

    def state(self) -> dict[str, Any]:
        """What the state file holds: enough for `status`, `down` and stale cleanup."""
        assert self.run_dir is not None
        processes = {}
        for name, handle in self.processes.items():
            machine = handle.config.get("machine")
            if machine is not None:  # on another machine: no local identity (stale cleanup must not touch it)
                record = {"pid": handle.pid, "machine": machine}
            else:
                record = process_identity(handle.pid) if handle.pid and handle.alive else {"pid": handle.pid}
            record.update(target=handle.target, control=handle.control, log=str(handle.log_path),
                          state=handle.state.value, returncode=handle.returncode, signal=handle.signal,
                          restarts=handle.restarts)
            processes[name] = record
        return {"name": self.name, "run_dir": str(self.run_dir.path), "topology": self.topology,
                "supervisor": process_identity(os.getpid()),
                "zygote": process_identity(self._zygote.pid) if self._zygote and self._zygote.process else None,
                "processes": processes, "updated": time.time(), **self.extra_state}

    def save_state(self) -> None:
        """Write the state file (the CLI calls this for detached emulations too)."""
        with self._state_lock:
            if self.run_dir is not None and self.run_dir.locked and not self._stopped:
                self.run_dir.write_state(self.state())

    # -- stopping ------------------------------------------------------------

    def stop(self, timeout: float = 3.0, keep_logs: bool | None = None) -> StopReport:
        """Stop everything: `shutdown` op, SIGTERM at timeout/2, SIGKILL at timeout; then
        the zygote; check nothing is left; remove the run directory."""
        report = StopReport()
        if self._stopped or self._zygote is None:
            return report
        began = time.monotonic()
        restore, received = defer_signals()
        try:
            self._stopping = True
            self._terminate([h for h in self.processes.values() if h.alive], timeout, report)
            report.leftovers = self._zygote.stop()
            self._crashes.put(None)
            if self._dispatcher is not None and self._dispatcher is not threading.current_thread():
                self._dispatcher.join(2.0)
            if report.leftovers:
                log.warning("%s: killed leftover processes %s after teardown", self.name, report.leftovers)
            if self._context is not None:
                self._context.destroy(linger=0)
            assert self.run_dir is not None
            with self._state_lock:  # a late save_state must not recreate state.json in a removed directory
                self.run_dir.release(keep_logs=self.keep_logs if keep_logs is None else keep_logs)
            self._stopped = True
            atexit.unregister(self.stop)
        finally:
            restore()
        report.duration = time.monotonic() - began
        if received:
            raise Terminated(received[0])  # the signal that arrived mid-teardown, delivered now
        return report

    def _terminate(self, handles: list[ProcessHandle], timeout: float, report: StopReport) -> None:
        """`shutdown` to all at once, SIGTERM at half the timeout, SIGKILL at the deadline."""
        deadline = time.monotonic() + timeout
        live = {h.name: h for h in handles if h.alive}
        if not live:
            return
        with self._lock:
            for handle in live.values():
                handle.exit_expected = True
                if handle.alive:
                    handle.state = ProcessState.STOPPING
        # The exit is what counts, not the reply: a process that has exited is skipped.
        phase_end = time.monotonic() + timeout / 2
        order = list(live.values())
        ControlClient.fan_out([(h.control, "shutdown", None) for h in order], timeout / 2, context=self._context,
                              skip=lambda index: not order[index].alive)
        self._wait_exits(live.values(), phase_end)
        report.shutdown.extend(n for n, h in live.items() if not h.alive)
        for sig, until, names in ((signal.SIGTERM, deadline, report.terminated),
                                  (signal.SIGKILL, deadline + 2.0, report.killed)):
            survivors = [h for h in live.values() if h.alive]
            if not survivors:
                return
            for handle in survivors:
                self._signal(handle, sig)
                names.append(handle.name)
            self._wait_exits(survivors, until)

    def _wait_exits(self, handles: Iterable[ProcessHandle], until: float) -> bool:
        """Wait until every handle has exited (True) or `until` passes (False)."""
        with self._exited:
            while any(h.alive for h in handles):
                remaining = until - time.monotonic()
                if remaining <= 0 or self._zygote is None or self._zygote.gone:
                    return False
                self._exited.wait(min(remaining, 0.1))
        return True

    # -- events from the zygote (reader thread) -------------------------------

    def _require_running(self) -> None:
        if self._zygote is None or self._stopped:
            raise SupervisorError("the supervisor is not running (call start() first)")
        if self._stopping:
            raise SupervisorError("the supervisor is stopping")

    def _on_exit(self, pid: Any, returncode: int | None, sig: int | None, tail: list[str] | None = None) -> None:
        with self._lock:
            handle = self._by_pid.pop(pid, None)
            if handle is None:
                return
            handle.returncode = returncode
            handle.signal = sig
            expected = handle.exit_expected or self._stopping
            # Published before anyone can see the process as exited: wait_crash_reports()
            # (and so Emulation.unexpected_crashes) relies on the crash being queued by then.
            self._publish(self._exit_event(handle, expected, tail))
            handle.state = ProcessState.EXITED
            self._exit_count += 1
            self._exited.notify_all()

    def _on_zygote_lost(self) -> None:
        """The zygote died on its own: its children died with it (PDEATHSIG); report them all."""
        assert self._zygote is not None and self._zygote.process is not None and self.run_dir is not None
        with self._lock:
            lost = list(self._by_pid.values())
            self._by_pid.clear()
            code = self._zygote.process.returncode
            self._publish(ExitEvent(ZYGOTE_NAME, self._zygote.pid,
                                    code if code is None or code >= 0 else None,
                                    -code if code is not None and code < 0 else None,
                                    read_log_tail(self.run_dir.log_path(ZYGOTE_NAME)), False, time.monotonic()))
            for handle in lost:
                handle.returncode, handle.signal = None, signal.SIGKILL
                self._publish(self._exit_event(handle, handle.exit_expected))  # queued before it is seen exited
                handle.state = ProcessState.EXITED
            self._exit_count += 1
            self._exited.notify_all()

    def _exit_event(self, handle: ProcessHandle, expected: bool, tail: list[str] | None = None) -> ExitEvent:
        if tail is not None:  # from the agent of another machine, where the log is
            self._tails[handle.name] = tail
        else:
            tail = read_log_tail(handle.log_path) or self._tails.get(handle.name, [])
        return ExitEvent(handle.name, handle.pid or 0, handle.returncode, handle.signal, tail, expected,
                         time.monotonic())

    def _publish(self, event: ExitEvent) -> None:
        self._events.put(event)
        if event.crashed:
            self._crashes.put(event)

    def wait_crash_reports(self, timeout: float = 1.0) -> bool:
        """Wait until `on_crash` has been called for every crash seen so far; False on timeout."""
        if self._dispatcher is None or not self._dispatcher.is_alive():
            return True
        if self._dispatcher is threading.current_thread():
            return False  # from on_crash itself: the queue waits for us
        done = threading.Event()
        self._crashes.put(done)
        return done.wait(timeout)

    def _dispatch_crashes(self) -> None:
        while (event := self._crashes.get()) is not None:
            if isinstance(event, threading.Event):
                event.set()  # a wait_crash_reports() marker: everything before it is delivered
                continue
            if not self._stopping:
                try:
                    self.save_state()  # `netemu status` of a detached emulation shows the exit
                except OSError:
                    log.exception("%s: could not record the exit of %s", self.name, event.name)
            if self.on_crash is not None:
                try:
                    self.on_crash(event)
                except Exception:
                    log.exception("%s: on_crash callback failed", self.name)
