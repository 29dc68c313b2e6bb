"""sockfs: the files of a node's sockets. Each emulated socket is one end of a real socketpair.

Before changing this file, read issue 12's design section, `nodes/syscalls.py` (the
trapped front end) and `nodes/socket/__init__.py` (the socket layer's contract).

Linux gives a socket a `struct file` in sockfs; a program holds the file, the kernel the
`struct sock`. Here the program holds one end of a socketpair (`AF_UNIX`, SOCK_SEQPACKET
for datagram sockets so message boundaries hold, SOCK_STREAM for stream sockets) and
`Sockfs` holds the other end beside the `InetSocket`. What needs no address crosses the
pair natively, without a trap: the program's send()/write() lands on our end and is
sent on the socket's connected peer; a received datagram is written into our end, so
recv()/read()/poll()/select()/epoll() in the program work natively, and dup/fork/close
follow the file's reference count (EOF on our end: the last copy is gone, the socket is
closed and its port released).

`Sockfs` implements the `SocketLayer` protocol the front ends call (nodes/syscall_args.py):
the trapped front end (`nodes/syscalls.py`) and the in-process one (`nodes/api_server.py`).

* **Addresses and control data of pushed datagrams.** A datagram written into the pair
  leaves its source address and ancillary data behind in `SocketFile.pushed`, in order.
  A trapped recvfrom/recvmsg (one that wants them) reads the datagram natively from the
  program's own file (`call.file`) and takes the matching entry. Datagrams the program
  consumed with plain recv() never come back here: before each trapped read, FIONREAD
  on the program's end (for SEQPACKET, the bytes of every queued message) says how
  many bytes are left, and the entries of the consumed prefix are dropped.
* **Back-pressure.** The pair holds what its sender's SO_SNDBUF allows (ours is set to
  the socket's SO_RCVBUF); what does not fit stays in the socket's receive queue, where
  SO_RCVBUF bounds it and drops are counted (RcvbufErrors) as on Linux; it is pushed
  again when the program has read (checked every `RETRY_PUSH` seconds while anything
  waits).
* **Blocking calls.** A trapped recvmsg on an empty socket, or accept/connect of a stream
  socket, returns a `Deferred` unless the file is non-blocking (`call.nonblock`) or
  MSG_DONTWAIT is set; it is resolved when the socket's readiness changes (`on_ready`,
  handled at the end of the loop pass: `service()`), or fails with EAGAIN after
  SO_RCVTIMEO. A pending reader gets the next datagram directly, with its address.
* SO_RCVTIMEO, SO_SNDTIMEO and SO_SNDBUF are also set on the program's end, so native
  recv()/send() honour them; shutdown() shuts the pair's matching direction, so a native
  recv() after SHUT_RD returns 0 and a native send() after SHUT_WR fails with EPIPE.

Known limits (documented in docs/programs.md): an error the socket holds (sk_err: ICMP
port unreachable on a connected UDP socket) reaches only calls that trap (recvfrom/recvmsg
with an address, sendto, getsockopt(SO_ERROR)), never a native send()/recv(); errors of
native sends (EMSGSIZE, ENETUNREACH) are counted, not returned; POLLERR for a non-empty
error queue is not visible to a native poll().

Stream sockets (TCP): the pump between the pair and the connection, non-blocking connect,
listeners' readiness and errors are `StreamPump`'s (nodes/sockfs_stream.py: read its docstring).
Until connect()/listen() a stream socket's program end is an unconnected unix socket, then it is
connected to our end in place, or listens (`Placeholders`, nodes/sockfs_file.py).
"""
from __future__ import annotations

import array
import errno
import fcntl
import os
import select
import socket as _socket
import termios
from typing import Any, Callable

from .socket import SocketLayer as InetLayer
from .socket.cmsg import pack_cmsgs, unpack_cmsgs
from .socket.constants import (
    MSG_DONTWAIT, MSG_ERRQUEUE, MSG_PEEK, MSG_TRUNC, SHUT_RD, SHUT_RDWR, SHUT_WR, SO_ERROR, SO_RCVBUF, SO_RCVTIMEO,
    SO_SNDBUF, SO_SNDTIMEO, SOL_SOCKET, TCP_LISTEN, TCP_SYN_RECV, TCP_SYN_SENT,
)
from .socket.inet import InetSocket
from .sockfs_stream import StreamPump
from .sockfs_file import (
    MAX_DATAGRAM, NATIVE_BATCH, RETRY_PUSH, SO_COOKIE, PairRenewal, Placeholders, SocketFile, _Pushed, _Reader,
    credentials,
)
from .syscall_args import Call, RecvResult, SockAddr

class Sockfs(StreamPump, PairRenewal, Placeholders):
    """The files of one node's sockets: the `SocketLayer` the front ends call.

    `add_reader(fd, callback)`/`remove_reader(fd)` and `call_later(delay, callback)` are
    the node loop's; `on_release(sock_id)` is told when a socket's last file is gone.
    Call `service()` at the end of every loop pass."""

    def __init__(self, layer: InetLayer, clock: Callable[[], float], add_reader: Callable[[int, Callable], None],
                 remove_reader: Callable[[int], None], call_later: Callable[..., Any],
                 on_release: Callable[[int], None] | None = None) -> None:
        self.layer = layer
        self.clock = clock
        self.add_reader = add_reader
        self.remove_reader = remove_reader
        self.call_later = call_later
        self.on_release = on_release
        self.files: dict[int, SocketFile] = {}
        self.by_inode: dict[int, int] = {}
        self._next_id = 1
        self._dirty: dict[int, SocketFile] = {}
        self._retry: Any = None
        self._reaper: Any = None
        self._buffer = bytearray(MAX_DATAGRAM)
        self.counters = {"sockets": 0, "released": 0, "pushed": 0, "native_sent": 0, "native_send_errors": 0}
        self._stream_init()
        self._placeholders_init()

    # ------------------------------------------------------------ files

    def socket(self, family: int, type_: int, proto: int, call: Call) -> tuple[int, int]:
        uid, groups, privileged, process = credentials(call.pid)
        sock = self.layer.socket(family, type_, proto, privileged=privileged, uid=uid, groups=groups)
        return self._open(sock, process, renewable=call.replace is not None,     # (its fds: /proc/PROCESS/fd)
                          placeholder=sock.type == _socket.SOCK_STREAM)

    def _open(self, sock: InetSocket, pid: int, renewable: bool = False, placeholder: bool = False) -> tuple[int, int]:
        sock_id, self._next_id = self._next_id, self._next_id + 1
        file = SocketFile(sock_id, sock, None, 0, pid, renewable=renewable)  # type: ignore[arg-type]
        theirs = self._placeholder(file) if placeholder else self._new_pair(file)
        self.files[sock_id] = file
        sock.on_ready = lambda _sock, file=file: self._dirty.__setitem__(file.id, file)
        self.counters["sockets"] += 1
        return sock_id, theirs.detach()

    def _new_pair(self, file: SocketFile) -> _socket.socket:
        """A new socketpair for `file`: ours is its `end` (a reader), the program's is returned."""
        kind = _socket.SOCK_STREAM if file.stream else _socket.SOCK_SEQPACKET
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, kind)
        ours.setblocking(False)
        ours.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, max(file.sock.rcvbuf // 2, 4096))
        file.end = ours
        file.inode = os.fstat(theirs.fileno()).st_ino
        file.cookie = theirs.getsockopt(_socket.SOL_SOCKET, SO_COOKIE, 8)
        self.by_inode[file.inode] = file.id
        if file.stream:
            self._stream_open(file)
        else:
            self.add_reader(ours.fileno(), lambda: self._from_program(file))
        return theirs

    def lookup(self, fd: int) -> int | None:
        """The socket whose program end `fd` is (any duplicate of it), or None."""
        try:
            return self.by_inode.get(os.fstat(fd).st_ino)
        except OSError:
            return None

    def _file(self, sock_id: int, call: Call | None = None) -> SocketFile:
        file = self.files.get(sock_id)
        if file is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        if file.broken and not file.dead and call is not None and call.replace is not None:
            self._renew(file, call)
        return file

    def release(self, file: SocketFile) -> None:
        """The last copy of the program's end is gone (or the node shuts down): close the socket."""
        if self.files.pop(file.id, None) is None:
            return
        if self.by_inode.get(file.inode) == file.id:    # the inode may be another socket's by now
            del self.by_inode[file.inode]
        self._dirty.pop(file.id, None)
        for reader in file.readers:
            self._cancel_timer(reader)
            reader.deferred.fail(errno.EBADF)
        file.readers.clear()
        if file.stream:
            self._stream_close(file)
        if not file.broken:
            self._close_end(file)
        file.sock.on_ready = None
        file.sock.close(self.clock())
        self.counters["released"] += 1
        if self.on_release is not None:
            self.on_release(file.id)

    def _close_end(self, file: SocketFile) -> None:
        if file.end is None:                        # a stream socket's placeholder: nothing of ours
            return
        if not file.stream:                         # (a stream's end is in the epoll: closing takes it out)
            try:
                self.remove_reader(file.end.fileno())
            except (KeyError, ValueError):
                pass
        file.end.close()

    def close(self) -> None:
        for file in list(self.files.values()):
            self.release(file)
        for timer in (self._retry, self._reaper):
            if timer is not None:
                timer.cancel()
        self._stream_final()
        self._placeholders_final()

    # ------------------------------------------------------------ the program's native sends

    def _from_program(self, file: SocketFile) -> None:
        """Our end is readable: the program sent without an address (send/write), or closed it."""
        view = memoryview(self._buffer)
        for _ in range(NATIVE_BATCH):
            try:
                length = file.end.recv_into(self._buffer)
            except BlockingIOError:
                return
            except OSError:
                self.release(file)
                return
            if length == 0 and self._hung_up(file):
                self.release(file)
                return
            try:
                file.sock.sendmsg(bytes(view[:length]), None, self.clock(), 0)
                self.counters["native_sent"] += 1
            except OSError:
                file.native_send_errors += 1
                self.counters["native_send_errors"] += 1

    @staticmethod
    def _hung_up(file: SocketFile) -> bool:
        poller = select.poll()
        poller.register(file.end.fileno(), select.POLLIN)
        events = poller.poll(0)
        return bool(events and events[0][1] & (select.POLLHUP | select.POLLERR))

    def _drain(self, file: SocketFile) -> None:
        """Send what the program wrote natively before a trapped send, so the order holds."""
        if not file.stream:
            self._from_program(file)

    # ------------------------------------------------------------ received datagrams

    def service(self) -> None:
        """End of a loop pass: hand what arrived to pending calls and push the rest into the pairs."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, {}
        for file in dirty.values():
            if file.id in self.files:
                self._service(file)

    def _service(self, file: SocketFile) -> None:
        sock = file.sock
        if file.stream:
            self._stream_service(file)
            if file.id not in self.files:
                return
        while file.readers:
            reader = file.readers[0]
            if reader.deferred.done:
                file.readers.popleft()
                continue
            if reader.kind == "recv":
                if not (sock.receive_queue or sock.sk_err or sock.eof):
                    break
                file.readers.popleft()
                self._finish_recv(file, reader)
            elif reader.kind == "accept":
                if sock.state == TCP_LISTEN and not sock.accept_queue and not sock.sk_err:
                    break
                file.readers.popleft()
                self._finish(reader, lambda: self._accept_now(file, reader.call))
            elif reader.kind == "connect":
                if sock.state in (TCP_SYN_SENT, TCP_SYN_RECV) and not sock.sk_err:
                    break
                file.readers.popleft()
                self._finish(reader, lambda: self._connected(file))
            else:                                   # a stream's srecv/ssend
                if not self._stream_reader(file, reader):
                    break
                file.readers.popleft()
        if file.stream or file.broken:
            return
        if file.renewable and not file.readers and (sock.recverr or sock.recverr6) and (sock.error_queue or sock.sk_err):
            self._show_error(file)
            return
        self._push(file)

    def _finish(self, reader: _Reader, produce: Callable[[], Any]) -> None:
        self._cancel_timer(reader)
        try:
            value = produce()
        except OSError as error:
            reader.deferred.fail(error.errno or errno.EIO)
            return
        if not reader.deferred.resolve(value) and reader.kind == "accept":
            os.close(value[1])          # its caller is gone: the new socket sees EOF and is released

    def _finish_recv(self, file: SocketFile, reader: _Reader) -> None:
        """A pending reader takes the next datagram from the socket itself (peeked until the call
        is known to be alive: a vanished call leaves it for the next reader)."""
        self._cancel_timer(reader)
        now = self.clock()
        try:
            message = file.sock.recvmsg(reader.size, now, reader.flags | MSG_PEEK)
        except OSError as error:
            if error.errno == errno.EAGAIN and file.sock.eof:
                reader.deferred.resolve(RecvResult(b"", None))
                return
            reader.deferred.fail(error.errno or errno.EIO)
            return
        if reader.deferred.resolve(self._result(file, message, reader.control_size)) and not reader.flags & MSG_PEEK:
            file.sock.recvmsg(reader.size, now, reader.flags & ~MSG_PEEK)

    def _push(self, file: SocketFile) -> None:
        sock = file.sock
        while sock.receive_queue and not file.read_shut:
            now = self.clock()
            message = self._peek(sock, now)
            try:
                file.end.send(message.data)
            except BlockingIOError:
                file.stalled = True
                self._schedule_retry()
                return
            except OSError:                         # the program's end is gone: EOF comes next
                return
            self._peek(sock, now, 0)                 # dequeued: counted as read (InDatagrams)
            file.pushed.append(_Pushed(len(message.data), message.address, message.ancillary, message.flags))
            file.pushed_bytes += len(message.data)
            self.counters["pushed"] += 1
        file.stalled = False

    @staticmethod
    def _peek(sock: InetSocket, now: float, flags: int = MSG_PEEK) -> Any:
        """The queue's head, leaving a pending error (sk_err) for the next call that traps."""
        error, sock.sk_err = sock.sk_err, 0
        try:
            return sock.recvmsg(MAX_DATAGRAM, now, flags)
        finally:
            if not sock.sk_err:
                sock.sk_err = error

    def _schedule_retry(self) -> None:
        if self._retry is None:
            self._retry = self.call_later(RETRY_PUSH, self._retry_push)

    def _retry_push(self) -> None:
        self._retry = None
        for file in list(self.files.values()):
            if file.stalled:
                self._service(file)

    # ------------------------------------------------------------ the protocol's calls

    def bind(self, sock_id: int, address: SockAddr, call: Call) -> None:
        sock = self._file(sock_id, call).sock
        try:
            sock.bind(address)
        except OSError as error:                # a closed placeholder may hold it still: look now
            if error.errno != errno.EADDRINUSE or not self._unheld_scan():
                raise
            sock.bind(address)

    def connect(self, sock_id: int, address: SockAddr, call: Call) -> Any:
        file = self._file(sock_id, call)
        file.sock.connect(address, self.clock())
        if file.end is None:
            self._attach(file, call)    # the placeholder is connected to our end, in place
        if not file.stream or file.sock.state not in (TCP_SYN_SENT, TCP_SYN_RECV):
            return self._connected(file) if file.stream else None
        self._fill(file, call)      # unwritable until the handshake ends, however this call ends (EINTR too)
        if call.nonblock:
            raise OSError(errno.EINPROGRESS, os.strerror(errno.EINPROGRESS))
        return self._wait(file, _Reader("connect", call.defer(), call=call), file.sock.sndtimeo)

    def _connected(self, file: SocketFile) -> None:
        if file.sock.sk_err:
            error = file.sock.getsockopt(SOL_SOCKET, SO_ERROR)  # takes it
            raise OSError(error, os.strerror(error))

    def listen(self, sock_id: int, backlog: int, call: Call) -> None:
        file = self._file(sock_id, call)
        file.sock.listen(backlog)
        if file.end is None and file.listen_name is None:
            self._listen_native(file, call)     # the placeholder listens (its poll: the accept queue's)

    def accept(self, sock_id: int, call: Call) -> Any:
        file = self._file(sock_id, call)
        try:
            return self._accept_now(file, call)
        except BlockingIOError:
            if call.nonblock or file.sock.state != TCP_LISTEN:
                raise
        return self._wait(file, _Reader("accept", call.defer(), call=call), file.sock.rcvtimeo)

    def _accept_now(self, file: SocketFile, call: Call | None = None) -> tuple:
        child = file.sock.accept()
        self._unmark(file, call)
        child_id, program_end = self._open(child, file.pid)
        peer = child._sockaddr(*child.peer) if child.peer is not None else child.getpeername()
        return child_id, program_end, (child.family, *peer)

    def getsockname(self, sock_id: int, call: Call) -> tuple:
        sock = self._file(sock_id, call).sock
        return (sock.family, *sock.getsockname())

    def getpeername(self, sock_id: int, call: Call) -> tuple:
        sock = self._file(sock_id, call).sock
        return (sock.family, *sock.getpeername())

    def setsockopt(self, sock_id: int, level: int, name: int, value: bytes, call: Call) -> None:
        file = self._file(sock_id, call)
        file.sock.setsockopt(level, name, value)
        if level != SOL_SOCKET:
            return
        if name == SO_SNDBUF and file.stream and self._stream_sndbuf(file, value):
            return
        if name in (SO_RCVTIMEO, SO_SNDTIMEO, SO_SNDBUF):       # honoured by native calls too
            self._on_program_end(call, lambda end: end.setsockopt(SOL_SOCKET, name, value))
        elif name == SO_RCVBUF and file.end is not None:       # (a placeholder's: set when attached)
            file.end.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, max(file.sock.rcvbuf // 2, 4096))

    def getsockopt(self, sock_id: int, level: int, name: int, size: int, call: Call) -> bytes:
        value = self._file(sock_id, call).sock.getsockopt(level, name)
        return value.to_bytes(4, "little", signed=True) if isinstance(value, int) else bytes(value)

    def shutdown(self, sock_id: int, how: int, call: Call) -> None:
        file = self._file(sock_id, call)
        if file.stream:
            return self._stream_shutdown(file, how, call)
        try:
            file.sock.shutdown(how, self.clock())
        finally:
            if how in (SHUT_RD, SHUT_RDWR) and file.sock.shutdown_mask & 1 and not file.read_shut:
                file.read_shut = True               # a native recv() then returns 0
                self._quietly(lambda: file.end.shutdown(_socket.SHUT_WR))
            if how in (SHUT_WR, SHUT_RDWR) and file.sock.shutdown_mask & 2:
                self._on_program_end(call, lambda end: end.shutdown(_socket.SHUT_WR))   # native send(): EPIPE
            self._dirty[file.id] = file

    def sendmsg(self, sock_id: int, data: bytes, flags: int, address: SockAddr | None, control: bytes,
                call: Call) -> int:
        file = self._file(sock_id, call)
        if file.stream:
            return self._stream_sendmsg(file, data, flags, call)
        self._drain(file)
        ancillary = unpack_cmsgs(control) if control else ()
        return file.sock.sendmsg(data, address, self.clock(), flags, ancillary)

    def recvmsg(self, sock_id: int, size: int, flags: int, control_size: int, call: Call) -> Any:
        file = self._file(sock_id, call)
        sock = file.sock
        if flags & MSG_ERRQUEUE:
            return self._result(file, sock.recvmsg(size, self.clock(), flags), control_size)
        if file.stream:
            return self._stream_recvmsg(file, size, flags, call)
        if sock.sk_err:
            return self._result(file, sock.recvmsg(size, self.clock(), flags), control_size)   # raises it
        if not file.stream and file.pushed and call.file >= 0:
            result = self._recv_pushed(file, size, flags, control_size, call.file)
            if result is not None:
                return result
        if sock.receive_queue:
            return self._result(file, sock.recvmsg(size, self.clock(), flags), control_size)
        if sock.eof:
            return RecvResult(b"", None)
        if call.nonblock or flags & MSG_DONTWAIT:
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        return self._wait(file, _Reader("recv", call.defer(), size, flags, control_size), sock.rcvtimeo)

    def _recv_pushed(self, file: SocketFile, size: int, flags: int, control_size: int, program_fd: int) -> Any:
        """The next datagram from the program's end, with the address it arrived from."""
        left = array.array("i", [0])
        fcntl.ioctl(program_fd, termios.FIONREAD, left)
        while file.pushed and file.pushed_bytes > left[0]:      # consumed by native recv()
            file.pushed_bytes -= file.pushed.popleft().length
        if not file.pushed:
            return None
        entry = file.pushed[0]
        end = _socket.socket(fileno=program_fd)
        try:
            data = end.recv(max(entry.length, 1), MSG_DONTWAIT | (flags & MSG_PEEK))
        except BlockingIOError:
            file.pushed.clear()
            file.pushed_bytes = 0
            return None
        finally:
            end.detach()
        if not flags & MSG_PEEK:
            file.pushed.popleft()
            file.pushed_bytes -= entry.length
        ancillary, control_flags = pack_cmsgs(entry.ancillary, control_size)
        truncated = len(data) > size
        return RecvResult(data[:size], self._address(file, entry.address), ancillary,
                          entry.msg_flags | control_flags | (MSG_TRUNC if truncated else 0),
                          len(data) if flags & MSG_TRUNC else min(len(data), size))

    def _result(self, file: SocketFile, message: Any, control_size: int) -> RecvResult:
        ancillary, control_flags = pack_cmsgs(message.ancillary, control_size)
        return RecvResult(message.data, self._address(file, message.address), ancillary,
                          message.flags | control_flags, message.length)

    @staticmethod
    def _address(file: SocketFile, address: tuple | None) -> tuple | None:
        return None if address is None else (file.sock.family, *address)

    # ------------------------------------------------------------ waiting

    def _wait(self, file: SocketFile, reader: _Reader, timeout: float) -> Any:
        file.readers.append(reader)
        deferred = reader.deferred
        if timeout > 0:
            reader.timer = self.call_later(timeout, self._time_out, file, reader)
        deferred.on_cancel(lambda: self._forget_reader(file, reader))
        return deferred

    def _time_out(self, file: SocketFile, reader: _Reader) -> None:
        reader.timer = None
        self._forget_reader(file, reader)
        reader.deferred.fail(errno.EINPROGRESS if reader.kind == "connect" else errno.EAGAIN)

    def _forget_reader(self, file: SocketFile, reader: _Reader) -> None:
        self._cancel_timer(reader)
        if reader in file.readers:
            file.readers.remove(reader)

    @staticmethod
    def _cancel_timer(reader: _Reader) -> None:
        if reader.timer is not None:
            reader.timer.cancel()
            reader.timer = None

    # ------------------------------------------------------------ helpers

    @staticmethod
    def _on_program_end(call: Call, action: Callable[[_socket.socket], None]) -> None:
        """Apply `action` to the program's own file (our duplicate of it), when we have it."""
        try:
            fd = call.file
        except OSError:
            return
        if fd < 0:
            return
        end = _socket.socket(fileno=fd)
        try:
            action(end)
        except OSError:
            pass
        finally:
            end.detach()

    @staticmethod
    def _quietly(action: Callable[[], Any]) -> None:
        try:
            action()
        except OSError:
            pass

    def table(self) -> list[dict]:
        """The `ss` table: every socket with its file's inode and creator, then the kernel's endpoints."""
        rows = self.layer.table()
        by_sock = {id(file.sock): file for file in self.files.values()}
        for row, sock in zip(rows, self.layer.sockets):
            file = by_sock.get(id(sock))
            if file is not None:
                row["inode"], row["pid"] = file.inode, file.pid
        return rows
