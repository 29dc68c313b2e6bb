"""Real programs under the syscall trap, answered by a fake socket layer in this process.

The fake (`FakeUdpLayer`) knows AF_INET/AF_INET6 SOCK_DGRAM only: socket() makes a
SOCK_SEQPACKET socketpair and gives the program one end, bind() records, getsockname()
answers the bound address (or 10.0.0.1:40000), sendmsg() records, recvmsg() waits
until the test resolves it. The loop in `serve` is what nodes/kernel.py will do.
"""
from __future__ import annotations

import errno
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections import deque

import pytest

from nodes import trap
from nodes.syscalls import AF_INET, Call, Deferred, RecvResult, SockAddr, SyscallFrontEnd
from tests.conftest import require_trap

pytestmark = pytest.mark.timeout(60)

PY = sys.executable
DEADLINE = 20.0
SO_TIMESTAMP = 29      # Linux's SO_TIMESTAMP_OLD (the socket module does not name it)


@pytest.fixture(autouse=True)
def _trap_available():
    require_trap()


@pytest.fixture(autouse=True)
def _no_fd_left():
    before = set(os.listdir("/proc/self/fd"))
    yield
    left = set(os.listdir("/proc/self/fd")) - before
    assert not left, f"fds left open: {[os.readlink(f'/proc/self/fd/{fd}') for fd in left if os.path.exists(f'/proc/self/fd/{fd}')]}"


class FakeUdpLayer:
    """The socket layer's interface, for datagram sockets, with everything recorded."""

    def __init__(self) -> None:
        self.sockets: dict[int, dict] = {}
        self.sent: list[tuple[bytes, int, SockAddr | None]] = []
        self.waiting: deque[tuple[int, Deferred]] = deque()
        self.cancelled: list[Deferred] = []
        self.calls: list[str] = []

    streams = False   # SOCK_STREAM only for the accept test: no transport behind it

    def socket(self, family, type, proto, call: Call):
        self.calls.append("socket")
        if type != socket.SOCK_DGRAM and not (self.streams and type == socket.SOCK_STREAM):
            raise OSError(errno.ESOCKTNOSUPPORT, "fake: datagram sockets only")
        return self.new_socket(family, type)

    def new_socket(self, family, type):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET if type == socket.SOCK_DGRAM
                                         else socket.SOCK_STREAM)
        ours.setblocking(False)
        sock_id = len(self.sockets) + 1
        self.sockets[sock_id] = {"ours": ours, "family": family, "bound": None}
        return sock_id, theirs.detach()

    def bind(self, sock, address: SockAddr, call):
        self.calls.append("bind")
        if address.family != self.sockets[sock]["family"]:   # as inet_bind: the length first
            raise OSError(errno.EINVAL if len(address.raw) < 16 else errno.EAFNOSUPPORT, "fake: wrong family")
        self.sockets[sock]["bound"] = address

    def getsockname(self, sock, call):
        self.calls.append("getsockname")
        return self.sockets[sock]["bound"] or (AF_INET, "10.0.0.1", 40000)   # a plain tuple will do

    def getpeername(self, sock, call):
        raise OSError(errno.ENOTCONN, "fake: not connected")

    def sendmsg(self, sock, data, flags, address, control, call):
        self.calls.append("sendmsg")
        if control:
            self.control = control
        self.sent.append((data, flags, address))
        return len(data)

    def recvmsg(self, sock, size, flags, control_size, call):
        self.calls.append("recvmsg")
        if call.nonblock or flags & socket.MSG_DONTWAIT:
            raise OSError(errno.EAGAIN, "fake: nothing queued")
        deferred = call.defer()                      # what nodes/socket/ does (no import)
        deferred.on_cancel(lambda: self.cancelled.append(deferred))
        self.waiting.append((sock, deferred))
        return deferred

    def connect(self, sock, address, call):
        self.calls.append("connect")
        if call.nonblock:
            raise OSError(errno.EINPROGRESS, "fake: connecting")
        deferred = Deferred()
        self.waiting.append((sock, deferred))
        return deferred

    def listen(self, sock, backlog, call):
        self.calls.append(f"listen {backlog}")
        self.sockets[sock]["listening"] = True

    def accept(self, sock, call):
        self.calls.append("accept")
        if not self.sockets[sock].get("listening"):
            raise OSError(errno.EINVAL, "fake: not listening")
        deferred = call.defer()
        self.waiting.append((sock, deferred))
        return deferred

    def setsockopt(self, sock, level, name, value, call):
        raise OSError(errno.ENOPROTOOPT, "fake")

    def getsockopt(self, sock, level, name, size, call):
        # what Python's socket(fileno=...) asks
        values = {socket.SO_TYPE: socket.SOCK_DGRAM, socket.SO_DOMAIN: self.sockets[sock]["family"],
                  socket.SO_PROTOCOL: socket.IPPROTO_UDP}
        if level != socket.SOL_SOCKET or name not in values:
            raise OSError(errno.ENOPROTOOPT, "fake")
        return values[name].to_bytes(4, sys.byteorder)

    def shutdown(self, sock, how, call):
        raise RuntimeError("a bug in the socket layer")

    def close(self) -> None:
        for entry in self.sockets.values():
            entry["ours"].close()


class Harness:
    """One front end, its fake layer, and the programs started under it (killed at the end)."""

    def __init__(self) -> None:
        self.layer = FakeUdpLayer()
        self.front = SyscallFrontEnd(self.layer)
        self.processes: list[subprocess.Popen] = []

    def spawn(self, code: str, *args: str, families=(2, 10), **kwargs) -> subprocess.Popen:
        argv = [PY, "-c", textwrap.dedent(code), *args] if code else list(args)
        process, listener = trap.spawn_trapped(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                               families=families, **kwargs)
        self.processes.append(process)
        self.front.add_listener(listener)
        return process

    def serve(self, until, timeout: float = DEADLINE, program: subprocess.Popen | None = None) -> None:
        """The node kernel's loop, in small: poll the listeners, dispatch, sweep."""
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                raise TimeoutError("the condition did not come true")
            if program is not None and program.poll() is not None:
                raise AssertionError(f"the program exited ({program.returncode}): {program.stderr.read().decode()}")
            poller = select.poll()
            for listener in self.front.listeners:
                poller.register(listener, select.POLLIN)
            for fd, events in poller.poll(20):
                if fd in self.front.listeners:
                    self.front.on_readable(fd, events)
            if self.front.pending:
                self.front.sweep()

    def finish(self, process: subprocess.Popen, timeout: float = DEADLINE) -> tuple[str, str]:
        """Serve until `process` exits; its (stdout, stderr)."""
        out: list[bytes] = []
        err: list[bytes] = []
        os.set_blocking(process.stdout.fileno(), False)
        os.set_blocking(process.stderr.fileno(), False)

        def drained() -> bool:
            for stream, sink in ((process.stdout, out), (process.stderr, err)):
                chunk = stream.read()
                if chunk:
                    sink.append(chunk)
            return process.poll() is not None

        self.serve(drained, timeout)
        for stream, sink in ((process.stdout, out), (process.stderr, err)):
            os.set_blocking(stream.fileno(), True)
            sink.append(stream.read())
        return b"".join(out).decode(), b"".join(err).decode()

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(10)
            for stream in (process.stdout, process.stderr, process.stdin):
                if stream is not None:
                    stream.close()
        self.front.close()
        self.layer.close()


@pytest.fixture
def harness():
    h = Harness()
    try:
        yield h
    finally:
        h.close()


def test_a_datagram_socket_is_answered_by_the_socket_layer(harness):
    program = harness.spawn("""
        import os, socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("10.0.0.1", 5000))
        print("name", s.getsockname(), flush=True)
        d = os.dup(s.fileno())                       # a dup is the same socket
        print("dup", socket.socket(fileno=d).getsockname(), flush=True)
        s.send(b"plain send")                        # no address: never trapped, native
        s.sendto(b"hello", ("10.0.0.2", 7))          # trapped
        print("recvfrom", s.recvfrom(100), flush=True)
        a, b = socket.socketpair()                   # AF_UNIX: native
        a.send(b"unix"); print("unix", b.recv(10), flush=True)
        u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        u.bind("")                                   # autobind: bind on a foreign fd continues
        print("unix bound", repr(u.getsockname()[:1]), flush=True)
    """)
    harness.serve(lambda: harness.layer.waiting, program=program)
    sock, deferred = harness.layer.waiting.popleft()
    assert deferred.resolve((b"reply", (AF_INET, "10.0.0.2", 7)))         # plain tuples will do
    out, err = harness.finish(program)
    assert program.returncode == 0, err
    assert "name ('10.0.0.1', 5000)" in out
    assert "dup ('10.0.0.1', 5000)" in out
    assert "recvfrom (b'reply', ('10.0.0.2', 7))" in out
    assert "unix b'unix'" in out and "unix bound b'\\x00'" in out
    assert harness.layer.sent == [(b"hello", 0, SockAddr(AF_INET, "10.0.0.2", 7))]
    assert harness.layer.sockets[sock]["ours"].recv(100) == b"plain send"
    assert harness.layer.calls.count("socket") == 1            # AF_UNIX never reached the layer
    assert harness.front.counters["continued"] >= 2             # the AF_UNIX bind and getsockname


def test_sockets_of_other_families_continue_natively_when_the_filter_traps_them_all(harness):
    program = harness.spawn("""
        import socket
        u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        n = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
        print("ok", u.family, n.family, flush=True)
    """, families=None)
    out, err = harness.finish(program)
    assert program.returncode == 0, err
    assert f"ok {socket.AF_UNIX:d} {socket.AF_NETLINK:d}" in out
    assert harness.layer.calls == []
    assert harness.front.counters["continued"] >= 2


def test_a_refused_socket_fails_with_the_layers_errno(harness):
    program = harness.spawn("""
        import socket
        try:
            socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as e:
            print("errno", e.errno, flush=True)
    """)
    out, err = harness.finish(program)
    assert f"errno {errno.ESOCKTNOSUPPORT}" in out, err


def test_grandchildren_stay_trapped(harness):
    grandchild = "import socket, os; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); print('grandchild', s.getsockname(), flush=True)"
    program = harness.spawn("", "/bin/sh", "-c", f'"$PY" -c "{grandchild}"; echo sh done',
                            env={**os.environ, "PY": PY})
    out, err = harness.finish(program)
    assert program.returncode == 0, err
    assert "grandchild ('10.0.0.1', 40000)" in out and "sh done" in out
    forked = harness.spawn("""
        import os, socket
        pid = os.fork()
        if pid == 0:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            print("forked child", s.getsockname(), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
    """)
    out, err = harness.finish(forked)
    assert "forked child ('10.0.0.1', 40000)" in out, err


def test_a_task_killed_while_its_call_is_pending_is_dropped(harness):
    program = harness.spawn("""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.recvfrom(100)
    """)
    harness.serve(lambda: harness.layer.waiting, program=program)
    _, deferred = harness.layer.waiting.popleft()
    assert len(harness.front.pending) == 1
    program.kill()
    program.wait(10)
    harness.serve(lambda: not harness.front.pending)          # sweep() saw ID_VALID fail
    assert harness.layer.cancelled == [deferred]
    assert deferred.resolve(RecvResult(b"late", SockAddr(AF_INET, "10.0.0.2", 7))) is False
    harness.serve(lambda: not harness.front.listeners)         # POLLHUP: the listener is closed


def test_a_call_interrupted_by_a_signal_is_restarted_and_the_old_one_dropped(harness):
    program = harness.spawn("""
        import signal, socket, sys
        signal.signal(signal.SIGUSR1, lambda *_: print("signal", flush=True))
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        print("got", s.recvfrom(100), flush=True)           # PEP 475: retried after the handler
    """)
    harness.serve(lambda: harness.layer.waiting, program=program)
    _, first = harness.layer.waiting.popleft()
    program.send_signal(signal.SIGUSR1)
    harness.serve(lambda: harness.layer.waiting, program=program)
    _, second = harness.layer.waiting.popleft()
    assert first.cancelled and harness.layer.cancelled == [first]
    assert second.resolve(RecvResult(b"after", SockAddr(AF_INET, "10.0.0.3", 9)))
    out, err = harness.finish(program)
    assert "signal" in out and "got (b'after', ('10.0.0.3', 9))" in out, err


def test_closing_the_listener_fails_trapped_calls_with_enosys(harness):
    program = harness.spawn("""
        import socket, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.recvfrom(100)                                  # pending when the listener goes
        except OSError as e:
            print("pending call", e.errno, flush=True)
        sys.stdin.readline()
        try:
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except OSError as e:
            print("new call", e.errno, flush=True)
        print("plain syscalls work", len(open("/proc/self/status").read()) > 0, flush=True)
    """, stdin=subprocess.PIPE)
    harness.serve(lambda: harness.layer.waiting, program=program)
    harness.front.close()                                     # the node died
    assert harness.layer.cancelled
    program.stdin.write(b"go\n")
    program.stdin.flush()
    out, err = program.communicate(timeout=DEADLINE)
    assert f"pending call {errno.ENOSYS}" in out.decode(), err
    assert f"new call {errno.ENOSYS}" in out.decode()
    assert "plain syscalls work True" in out.decode()


def test_spawn_reports_a_missing_program_and_leaks_nothing():
    with pytest.raises(FileNotFoundError):
        trap.spawn_trapped(["/nonexistent/program"])


def test_spawn_reports_a_failing_preexec_as_trap_unavailable():
    def broken():
        raise RuntimeError("no namespace for you")

    with pytest.raises(trap.TrapUnavailable):
        trap.spawn_trapped([PY, "-c", "pass"], preexec=broken)


def test_nested_trap_is_refused_clearly(harness):
    """A program on a node cannot start another trapped program (one listener per filter chain)."""
    program = harness.spawn("""
        from nodes import trap
        try:
            trap.spawn_trapped(["true"])
        except trap.TrapUnavailable as e:
            print("refused:", e, flush=True)
    """, cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    out, err = harness.finish(program)
    assert "refused:" in out and "already under a filter" in out, err


LOOP = """
import socket, sys, time
n = int(sys.argv[1])
s = socket.socket(socket.AF_INET if sys.argv[2] == "inet" else socket.AF_UNIX, socket.SOCK_DGRAM)
for _ in range(100): s.getsockname()
start = time.perf_counter_ns()
for _ in range(n): s.getsockname()
print((time.perf_counter_ns() - start) / n / 1000, flush=True)
"""


def test_round_trip_is_measured(harness):
    """Printed for the report, not asserted: getsockname trapped and answered, trapped and
    continued (a foreign fd), and native (no filter)."""
    n = 3000
    native = subprocess.run([PY, "-c", LOOP, str(n), "unix"], capture_output=True, timeout=30, check=True)
    results = {"native (no filter)": float(native.stdout)}
    for kind, label in (("inet", "trapped, answered"), ("unix", "trapped, continued")):
        program = harness.spawn(LOOP, str(n), kind)
        out, err = harness.finish(program)
        assert program.returncode == 0, err
        results[label] = float(out)
    print("\ngetsockname round trip (us): " + ", ".join(f"{k} {v:.2f}" for k, v in results.items()))


def test_threads_are_trapped_and_answered(harness):
    """The notification names the thread; its fds are the process's (pidfd of a thread)."""
    program = harness.spawn("""
        import socket, threading
        results = []
        def worker():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            results.append(s.getsockname())
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        print("threads", results, flush=True)
    """)
    out, err = harness.finish(program)
    assert program.returncode == 0, err
    assert "threads " + repr([("10.0.0.1", 40000)] * 4) in out


def test_message_calls_nonblocking_sockets_options_and_a_pending_connect(harness):
    program = harness.spawn("""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
        try:
            s.recvfrom(10)
        except BlockingIOError:
            print("SOCK_NONBLOCK: EAGAIN", flush=True)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b.setblocking(False)                                  # native: the file's O_NONBLOCK
        try:
            b.recvfrom(10)
        except BlockingIOError:
            print("set later: EAGAIN", flush=True)
        try:
            b.connect(("10.0.0.5", 99))
        except BlockingIOError:
            print("connect: EINPROGRESS", flush=True)
        b.setblocking(True)
        print("sendmsg", b.sendmsg([b"ab", b"cd"], [], 0, ("10.0.0.9", 53)), flush=True)
        print("sendmsg plain", b.sendmsg([b"native"]), flush=True)     # continues natively
        print("recvmsg", b.recvmsg(100), flush=True)                     # waits for the layer
        try:
            b.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        except OSError as e:
            print("setsockopt errno", e.errno, flush=True)
        try:
            b.getpeername()
        except OSError as e:
            print("getpeername errno", e.errno, flush=True)
        b.connect(("10.0.0.5", 99))                                      # waits for the layer
        print("connected", flush=True)
    """)
    harness.serve(lambda: harness.layer.waiting, program=program)
    sock, received = harness.layer.waiting.popleft()
    assert received.resolve(RecvResult(b"xyz", SockAddr(AF_INET, "10.0.0.9", 53)))
    harness.serve(lambda: harness.layer.waiting, program=program)
    _, connected = harness.layer.waiting.popleft()
    assert connected.resolve(None)
    out, err = harness.finish(program)
    assert program.returncode == 0, err
    for line in ("SOCK_NONBLOCK: EAGAIN", "set later: EAGAIN", "connect: EINPROGRESS", "sendmsg 4",
                 "sendmsg plain 6", "recvmsg (b'xyz', [], 0, ('10.0.0.9', 53))",
                 f"setsockopt errno {errno.ENOPROTOOPT}", f"getpeername errno {errno.ENOTCONN}", "connected"):
        assert line in out, (line, out, err)
    assert harness.layer.sent == [(b"abcd", 0, SockAddr(AF_INET, "10.0.0.9", 53))]
    assert harness.layer.sockets[sock]["ours"].recv(100) == b"native"


def test_accept_injects_a_new_socket_with_the_peer_address(harness):
    harness.layer.streams = True
    program = harness.spawn("""
        import os, socket
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.bind(("0.0.0.0", 80))
        srv.listen(5)
        conn, peer = srv.accept()                    # accept4(SOCK_CLOEXEC), waits for the layer
        print("accepted", peer, conn.fileno() != srv.fileno(), os.get_inheritable(conn.fileno()), flush=True)
        conn.sendall(b"over the stream")             # native
        print("conn name", conn.getsockname(), flush=True)
        try:
            socket.socket(fileno=os.dup(srv.fileno())).accept()   # dup: the same listening socket
        except BlockingIOError:
            pass
    """)
    harness.serve(lambda: harness.layer.waiting, program=program)
    _, accepted = harness.layer.waiting.popleft()
    new_id, program_end = harness.layer.new_socket(AF_INET, socket.SOCK_STREAM)
    harness.layer.sockets[new_id]["bound"] = SockAddr(AF_INET, "10.0.0.1", 80)
    assert accepted.resolve((new_id, program_end, (AF_INET, "10.0.0.7", 3333)))
    harness.serve(lambda: harness.layer.waiting, program=program)
    _, second = harness.layer.waiting.popleft()
    assert second.fail(errno.EAGAIN)
    out, err = harness.finish(program)
    assert program.returncode == 0, err
    assert "accepted ('10.0.0.7', 3333) True False" in out
    assert "conn name ('10.0.0.1', 80)" in out
    assert harness.layer.sockets[new_id]["ours"].recv(100) == b"over the stream"
    assert "listen 5" in harness.layer.calls


def test_a_bug_in_the_socket_layer_answers_eio_and_is_raised(harness):
    program = harness.spawn("""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.shutdown(socket.SHUT_RD)
        except OSError as e:
            print("shutdown errno", e.errno, flush=True)
    """)
    with pytest.raises(RuntimeError, match="a bug in the socket layer"):
        harness.finish(program)
    out, err = harness.finish(program)
    assert f"shutdown errno {errno.EIO}" in out, err
    assert harness.front.counters["errors"] == 1


def test_bad_arguments_get_linux_errnos(harness):
    """Decoded as net/socket.c does: address lengths, NULL pointers, sendto(addr, 0) is send()."""
    program = harness.spawn("""
        import ctypes, socket
        libc = ctypes.CDLL(None, use_errno=True)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        fd = s.fileno()
        def errno_of(result):
            return ctypes.get_errno() if result < 0 else result
        addr = ctypes.create_string_buffer(200)
        length = ctypes.c_int(-1)
        print("bind 200", errno_of(libc.bind(fd, addr, 200)), flush=True)
        print("bind -1", errno_of(libc.bind(fd, addr, -1)), flush=True)
        print("bind 8", errno_of(libc.bind(fd, addr, 8)), flush=True)
        print("getsockname NULL", errno_of(libc.getsockname(fd, None, None)), flush=True)
        print("getsockname len -1", errno_of(libc.getsockname(fd, addr, ctypes.byref(length))), flush=True)
        length = ctypes.c_int(4)
        libc.getsockname(fd, addr, ctypes.byref(length))
        print("getsockname truncated", length.value, addr.raw[:6].hex(), flush=True)
        print("sendto bad buffer", errno_of(libc.sendto(fd, ctypes.c_void_p(8), 4, 0, addr, 16)), flush=True)
        print("bad fd", errno_of(libc.getsockname(9999, addr, ctypes.byref(length))), flush=True)
    """)
    out, err = harness.finish(program)
    assert program.returncode == 0, err
    for line in (f"bind 200 {errno.EINVAL}", f"bind -1 {errno.EINVAL}", f"bind 8 {errno.EINVAL}",
                 f"getsockname NULL {errno.EFAULT}", f"getsockname len -1 {errno.EINVAL}",
                 "getsockname truncated 16 02009c40" + "0000",
                 f"sendto bad buffer {errno.EFAULT}", f"bad fd {errno.EBADF}"):
        assert line in out, (line, out)


def test_sendmmsg_and_recvmmsg_with_addresses(harness):
    program = harness.spawn("""
        import ctypes, socket, struct
        from ctypes import POINTER, Structure, c_int, c_size_t, c_uint, c_void_p
        class iovec(Structure):
            _fields_ = [("base", c_void_p), ("len", c_size_t)]
        class msghdr(Structure):
            _fields_ = [("name", c_void_p), ("namelen", c_uint), ("iov", POINTER(iovec)), ("iovlen", c_size_t),
                        ("control", c_void_p), ("controllen", c_size_t), ("flags", c_int)]
        class mmsghdr(Structure):
            _fields_ = [("hdr", msghdr), ("len", c_uint)]
        assert ctypes.sizeof(mmsghdr) == 64
        libc = ctypes.CDLL(None, use_errno=True)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        keep = []
        def message(payload, name):
            buf = ctypes.create_string_buffer(payload, max(len(payload), 1)); keep.append(buf)
            vec = iovec(ctypes.addressof(buf), len(payload)); keep.append(vec)
            header = mmsghdr()
            header.hdr.iov, header.hdr.iovlen = ctypes.pointer(vec), 1
            if name is not None:
                addr = ctypes.create_string_buffer(name, 16); keep.append(addr)
                header.hdr.name, header.hdr.namelen = ctypes.addressof(addr), 16
            return header
        to = lambda port: struct.pack("=H", 2) + struct.pack(">H", port) + bytes([10, 0, 0, 9]) + bytes(8)
        out = (mmsghdr * 2)(message(b"one", to(1)), message(b"two!", to(2)))
        print("sendmmsg", libc.sendmmsg(s.fileno(), out, 2, 0), out[0].len, out[1].len, flush=True)
        inbox = (mmsghdr * 2)(message(bytes(10), bytes(16)), message(bytes(10), bytes(16)))
        count = libc.recvmmsg(s.fileno(), inbox, 2, 0, None)
        first = ctypes.string_at(inbox[0].hdr.iov[0].base, inbox[0].len)
        name = ctypes.string_at(inbox[0].hdr.name, inbox[0].hdr.namelen)
        print("recvmmsg", count, first, socket.inet_ntoa(name[4:8]), struct.unpack(">H", name[2:4])[0], flush=True)
    """)
    harness.serve(lambda: harness.layer.waiting, program=program)
    _, first = harness.layer.waiting.popleft()
    assert first.resolve((b"reply", (AF_INET, "10.0.0.9", 7)))
    out, err = harness.finish(program)
    assert program.returncode == 0, err
    assert "sendmmsg 2 3 4" in out, (out, err)
    assert "recvmmsg 1 b'reply' 10.0.0.9 7" in out, (out, err)
    assert [(data, address.port) for data, _, address in harness.layer.sent] == [(b"one", 1), (b"two!", 2)]


def test_control_data_goes_both_ways_and_is_truncated_with_msg_ctrunc(harness):
    program = harness.spawn("""
        import socket, struct
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ttl = [(socket.IPPROTO_IP, socket.IP_TTL, struct.pack("i", 5))]
        print("sent", s.sendmsg([b"x"], ttl), flush=True)                 # control data: trapped
        data, ancillary, flags, address = s.recvmsg(100, socket.CMSG_SPACE(16))
        print("whole", data, ancillary, flags & socket.MSG_CTRUNC, address, flush=True)
        data, ancillary, flags, address = s.recvmsg(100, 20)
        print("truncated", data, flags & socket.MSG_CTRUNC, flush=True)
    """)
    timestamp = struct.pack("=QiiQQ", 32, socket.SOL_SOCKET, SO_TIMESTAMP, 1, 2)
    for _ in range(2):
        harness.serve(lambda: harness.layer.waiting, program=program)
        _, deferred = harness.layer.waiting.popleft()
        assert deferred.resolve((b"data", (AF_INET, "10.0.0.2", 9), timestamp, 0))
    out, err = harness.finish(program)
    assert program.returncode == 0, err
    assert "sent 1" in out
    expected = [(socket.SOL_SOCKET, SO_TIMESTAMP, struct.pack("=QQ", 1, 2))]
    assert f"whole b'data' {expected!r} 0 ('10.0.0.2', 9)" in out, out
    assert f"truncated b'data' {socket.MSG_CTRUNC}" in out, out
    assert harness.layer.control[:16] == struct.pack("=Qii", 20, socket.IPPROTO_IP, socket.IP_TTL)
