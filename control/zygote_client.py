"""The supervisor's side of the zygote: start it, send it requests, receive its children's exits.

The zygote itself (the forking process, its protocol, the signal chain that
takes everything down with the supervisor) is described in control.zygote.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import msgpack

from .proctree import group_members, kill_all, wait_exit_unreaped

_PROJECT_ROOT = str(Path(__file__).resolve().parents[1])


class ZygoteError(RuntimeError):
    """The zygote could not be started, did not answer, or refused a request."""


class _Pending:
    """A request waiting for its reply; `on_reply` runs in the reader thread."""

    __slots__ = ("done", "reply", "on_reply")

    def __init__(self, on_reply: Callable[[dict], None] | None) -> None:
        self.done = threading.Event()
        self.reply: dict = {}
        self.on_reply = on_reply

    def resolve(self, reply: dict) -> None:
        if self.on_reply is not None:
            self.on_reply(reply)
        self.reply = reply
        self.done.set()

    def wait(self, timeout: float) -> dict:
        """The reply; raises ZygoteError on timeout or refusal."""
        if not self.done.wait(timeout):
            raise ZygoteError(f"the zygote did not answer within {timeout}s")
        if not self.reply.get("ok"):
            raise ZygoteError(self.reply.get("error", "request failed"))
        return self.reply


class ZygoteClient:
    """Starts the zygote and talks to it; a reader thread delivers replies and exit events.

    `on_exit(pid, returncode, signal)` runs in the reader thread for every
    child exit; `on_lost()` too, once, if the zygote dies while not being stopped
    (its children are then gone by PDEATHSIG, and nobody reports them).
    Start it from a thread that lives as long as the emulation: PR_SET_PDEATHSIG
    follows the thread that forked the zygote.
    """

    def __init__(self, on_exit: Callable[[int, int | None, int | None], None],
                 on_lost: Callable[[], None]) -> None:
        self.on_exit = on_exit
        self.on_lost = on_lost
        self.process: subprocess.Popen[bytes] | None = None
        self.preload_failures: dict[str, str] = {}
        self.gone = False  # the zygote's socket closed
        self._stopping = False
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._next_id = 1

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, log_path: str | os.PathLike[str], preload: list[str], grace: float = 1.0,
              timeout: float = 15.0) -> None:
        """Start `python -m control.zygote` in a new session; return when it has pre-imported."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        search_path = [os.path.abspath(entry) for entry in sys.path if os.path.exists(entry or ".")]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PROJECT_ROOT, env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "control.zygote", "--fd", str(theirs.fileno()),
                   "--parent", str(os.getpid()), "--preload", ",".join(preload),
                   "--sys-path", json.dumps(search_path), "--grace", str(grace)]
        try:
            with open(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as zygote_log:
                # A new session: a terminal's Ctrl-C reaches only the supervisor, never the children.
                self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=zygote_log,
                                                stderr=subprocess.STDOUT, pass_fds=(theirs.fileno(),),
                                                start_new_session=True, env=env)
        finally:
            theirs.close()
        self._sock = ours
        self._reader = threading.Thread(target=self._read_loop, name=f"zygote-{self.pid}", daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout) or self.gone:
            self.abandon()
            raise ZygoteError(f"the zygote did not start within {timeout}s (see {log_path})")

    def request(self, message: dict, on_reply: Callable[[dict], None] | None = None) -> _Pending:
        """Send a request without waiting; `.wait(timeout)` on the result for the reply."""
        pending = _Pending(on_reply)
        with self._lock:
            request_id = self._next_id
            self._next_id += 1
            self._pending[request_id] = pending
        data = msgpack.packb({**message, "id": request_id}, use_bin_type=True)
        try:
            assert self._sock is not None
            with self._write_lock:
                self._sock.sendall(data)
        except OSError as exc:
            with self._lock:
                self._pending.pop(request_id, None)
            pending.resolve({"ok": False, "error": f"the zygote is unreachable: {exc}"})
        return pending

    def call(self, message: dict, timeout: float = 5.0) -> dict:
        """Send a request and wait for its reply (raises ZygoteError)."""
        return self.request(message).wait(timeout)

    def stop(self, grace: float = 0.5, timeout: float = 3.0) -> list[int]:
        """Stop the zygote (it terminates its children) and kill anything left in its
        process group, e.g. a child's own children; returns the pids found left over."""
        assert self.process is not None
        self._stopping = True
        group = self.pid  # start_new_session made it the group leader
        early = group_members(group, exclude=group)
        kill_all(early)
        with contextlib.suppress(ZygoteError):
            self.call({"op": "exit", "grace": grace}, timeout)
        # Look at the group while the zygote is unreaped: until then its pid (the
        # group id) cannot be recycled, so everything found in the group is ours.
        if not wait_exit_unreaped(self.pid, timeout):
            self.process.kill()
        late = group_members(group, exclude=group)
        kill_all(late)
        self.process.wait()
        self._close()
        return early + late

    def abandon(self) -> None:
        """Kill the zygote outright (failed start)."""
        self._stopping = True
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close()

    def _close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the reader
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(2.0)
        if self._sock is not None:
            self._sock.close()

    def _read_loop(self) -> None:
        assert self._sock is not None
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                break
            unpacker.feed(data)
            for message in unpacker:
                if isinstance(message, dict):
                    self._on_message(message)
        self.gone = True
        with self._lock:
            pending, self._pending = self._pending, {}
        for request in pending.values():
            request.resolve({"ok": False, "error": "the zygote exited"})
        self._ready.set()
        if not self._stopping:
            assert self.process is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=2.0)
            self.on_lost()

    def _on_message(self, message: dict) -> None:
        if "reply" in message:
            with self._lock:
                pending = self._pending.pop(message["reply"], None)
            if pending is not None:
                pending.resolve(message)
        elif message.get("event") == "exit":
            self.on_exit(message.get("pid"), message.get("returncode"), message.get("signal"))
        elif message.get("event") == "ready":
            self.preload_failures = dict(message.get("failed") or {})
            self._ready.set()
