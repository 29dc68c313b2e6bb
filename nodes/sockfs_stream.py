"""sockfs for SOCK_STREAM: the pump between a stream socket's pair and its TCP connection.

Part of `nodes/sockfs.py` (read its docstring first); imported only by it.

A stream socket's file is a SOCK_STREAM socketpair; its bytes are TCP's (nodes/socket/stream.py):

* **Our ends are watched through one epoll** (`StreamPump._epoll`, the loop's reader; a
  file's `watch_mask`): EPOLLIN while TCP has send room, EPOLLOUT while bytes from TCP wait
  for the pair, EPOLLHUP (the program's last copy closed) always. A full send buffer stops the reading (back-pressure:
  the program's write() blocks or EAGAINs once the pair is full too) and a full pair stops
  the taking from TCP (its receive window closes), without spinning.
* **Program -> TCP**: our end is read up to `sock.send_room()` and `sock.sendmsg`'d. EOF or
  EPOLLHUP on our end is the program's close (its last copy): what is still in the pair
  goes to TCP beyond the send buffer (`sock.send_on_close`), then `sock.close()` (FIN, or
  RST when TCP holds unread bytes). ECONNRESET on our end means the program closed with
  bytes of ours unread: as tcp_close with unread data, RST (SO_LINGER 0 on the way out).
  shutdown(SHUT_WR) (trapped) shuts the program's end for writing first, so every byte
  before it reaches TCP before the FIN, and a later native write fails with EPIPE.
* **TCP -> program**: `sock.recvmsg` while TCP has bytes, written into our end; what the
  pair does not take waits in `rx_buf` (one read's worth) for EPOLLOUT. At TCP's EOF our
  end is shut for writing: the program's read() returns 0 after the last byte.
* **Errors**: a reset or timed-out connection (sk_err) shows once the bytes before it are
  in the pair: our end is closed with a byte unread (written from the program's end when
  none is), which Linux turns into ECONNRESET for the program's read() after those bytes,
  POLLERR|POLLHUP, then EPIPE on write (unix_release_sock). The error itself stays for a
  trapped getsockopt(SO_ERROR). The file is then `dead`: never renewed, released when the
  program no longer holds its end (REAP_BROKEN).
* **Non-blocking connect**: EINPROGRESS, and the program's end must not poll writable
  before the handshake is over (curl, iperf3, asyncio: connect, poll POLLOUT, SO_ERROR;
  Python after a blocking connect interrupted by a signal, SO_SNDTIMEO's EINPROGRESS).
  A fresh pair is writable, so the program's end gets the smallest SO_SNDBUF and is
  filled from a copy of it until its write() would block (`filler`); when the handshake
  ends (established or failed) the filler is read away and SO_SNDBUF restored: POLLOUT
  then, and SO_ERROR says how it went. A write() meanwhile fails with EAGAIN, as Linux's.
* **Before connect()/listen()** the program's end is a placeholder, an unconnected unix socket;
  connect() connects it to our end, listen() makes it a unix listener (nodes/sockfs_file.py
  `Placeholders`): a listener has no pair (`end` None), and polls readable while a connection
  of ours waits in it (`_mark`), taken back when accept() empties the queue (`_unmark`).
* **Native**: recv/read with MSG_PEEK, MSG_WAITALL, MSG_DONTWAIT, FIONREAD, poll/select/
  epoll and half-closed reads work on the pair. A trapped recvfrom/recvmsg (with an
  address or control buffer: TCP fills neither) reads the program's end natively, and a
  trapped sendto/sendmsg writes into it (TCP ignores the address), so bytes keep their order.

Known limits: after the program shut down writing (SHUT_WR) and TCP's EOF reached it, its
close is seen within REAP_BROKEN (the pair shows both directions shut either way); read()
after a reset says ECONNRESET where Linux may say EPIPE (reset in CLOSE-WAIT) or ETIMEDOUT
(SO_ERROR has the right one), and write() says EPIPE (with SIGPIPE) at once where Linux
says ECONNRESET first; a copy of the program's end held only by another process (fork) is not looked for
when reaping.
"""
from __future__ import annotations

import array
import errno
import fcntl
import os
import select
import socket as _socket
import struct
import termios
from typing import Any

from .socket.constants import (
    MSG_DONTWAIT, MSG_NOSIGNAL, SHUT_RD, SHUT_RDWR, SHUT_WR, SO_LINGER, SOL_SOCKET, TCP_LISTEN,
    TCP_SYN_RECV, TCP_SYN_SENT,
)
from .sockfs_file import REAP_BROKEN, SocketFile, _Reader
from .syscall_args import Call, RecvResult

STREAM_CHUNK = 1 << 18      # bytes moved per read, either way
_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
_GONE = select.EPOLLHUP | select.EPOLLERR
_FILLER = bytes(512)
_CONNECTING = (TCP_SYN_SENT, TCP_SYN_RECV)


class StreamPump:
    """`Sockfs`'s SOCK_STREAM part: the attributes and methods it uses are Sockfs's."""

    files: dict
    counters: dict
    clock: Any
    add_reader: Any
    remove_reader: Any
    call_later: Any
    _dirty: dict
    _reaper: Any
    release: Any
    _close_end: Any
    _wait: Any
    _borrow_program_end: Any
    _reap_broken: Any
    _on_program_end: Any
    _mark: Any
    _program_file: Any

    def _stream_init(self) -> None:
        self._stream_buffer = bytearray(STREAM_CHUNK)
        self._epoll: Any = None                     # made with the first stream socket
        self._watched: dict[int, SocketFile] = {}   # our end's fd -> its file
        for name in ("stream_in", "stream_out", "stream_dropped", "stream_errors", "stream_resets"):
            self.counters[name] = 0

    # ------------------------------------------------------------ the watch

    def _stream_open(self, file: SocketFile) -> None:
        """A new pair for a stream socket: its end joins the epoll (see the module docstring)."""
        if self._epoll is None:
            self._epoll = select.epoll()
            self.add_reader(self._epoll.fileno(), self._stream_events)
        file.watch = True
        file.watch_mask = -1
        self._watched[file.end.fileno()] = file
        self._arm(file)
        self._dirty[file.id] = file             # an accepted connection may hold bytes and EOF already

    def _stream_final(self) -> None:
        """The node shuts down (every file released): the epoll goes."""
        if self._epoll is not None:
            try:
                self.remove_reader(self._epoll.fileno())
            except (KeyError, ValueError):
                pass
            self._epoll.close()
            self._epoll = None

    def _stream_close(self, file: SocketFile) -> None:
        """Before our end is closed (which takes it out of the epoll: ours is its only fd)."""
        if file.watch:
            fd = file.end.fileno()
            if file.watch_mask != -1 and self._epoll is not None:
                try:                            # explicitly: a registration outlives the fd while any dup
                    self._epoll.unregister(fd)  # of its file lives, and its events would name the fd's next owner
                except OSError:
                    pass
            self._watched.pop(fd, None)
            file.watch, file.watch_mask = None, -1
        for name in ("filler_end", "marker_end"):
            if getattr(file, name) is not None:
                getattr(file, name).close()
                setattr(file, name, None)

    def _arm(self, file: SocketFile) -> None:
        """Watch what the pump needs now: EPOLLIN with send room, EPOLLOUT with bytes for the pair;
        EPOLLHUP comes with either, and alone unless it would say nothing (see `_program_gone`)."""
        if not file.watch:
            return
        sock = file.sock
        mask = 0
        if (file.tx_buf is not None or sock.send_room() > 0) and sock.connected and not file.prog_eof \
                and file.filler_end is None and not sock.sk_err:
            mask |= _IN
        if file.rx_buf is not None and not file.hup:
            mask |= _OUT
        if file.prog_shut_wr and file.eof_sent and not file.reap:
            self._reap_later(file)              # its SHUT_WR and our EOF make EPOLLHUP: ask /proc
        if not mask and (file.hup or file.reap):
            mask = -1
        if mask == file.watch_mask:
            return
        fd, epoll = file.end.fileno(), self._epoll
        if file.watch_mask == -1:
            epoll.register(fd, mask)
        elif mask == -1:
            epoll.unregister(fd)
        else:
            epoll.modify(fd, mask)
        file.watch_mask = mask

    def _stream_events(self) -> None:
        """The loop's reader: stream ends readable, writable or hung up (as armed)."""
        watched = self._watched
        for fd, events in self._epoll.poll(0):
            file = watched.get(fd)
            if file is not None and file.watch:
                self._stream_event(file, events)

    def _stream_event(self, file: SocketFile, events: int) -> None:
        if file.id not in self.files:
            return
        if events & (_IN | _GONE) and file.watch_mask > 0 and file.watch_mask & _IN:
            self._stream_from_program(file)
        if events & _OUT and self._alive(file):
            self._to_program(file)
        if events & _GONE and self._alive(file):
            self._program_gone(file)
        if self._alive(file):
            self._arm(file)

    def _alive(self, file: SocketFile) -> bool:
        return not file.dead and file.id in self.files

    # ------------------------------------------------------------ program -> TCP

    def _stream_from_program(self, file: SocketFile) -> None:
        """Our end's bytes to TCP, up to its send room (back-pressure); EOF: the program closed."""
        sock, end = file.sock, file.end
        buffer = self._stream_buffer
        view = memoryview(buffer)
        now = self.clock()
        while not sock.sk_err:
            if file.tx_buf is not None and not self._send_tcp(file, file.tx_buf, now):
                return
            room = sock.send_room()
            if room <= 0:
                return
            try:
                length = end.recv_into(buffer, min(room, STREAM_CHUNK))
            except BlockingIOError:
                return
            except ConnectionResetError:        # closed with bytes of ours unread (unix_release_sock)
                self._abort(file)
                return
            except OSError:
                self.release(file)
                return
            if length == 0:
                file.prog_eof = True
                if not file.prog_shut_wr:       # its last copy closed, every byte before it sent
                    self.release(file)
                return
            if not self._send_tcp(file, bytes(view[:length]), now):
                return

    def _send_tcp(self, file: SocketFile, data: bytes, now: float) -> bool:
        """sendmsg to TCP; what it does not take waits in `tx_buf`. True when all was taken."""
        try:
            taken = file.sock.sendmsg(data, None, now)
        except BlockingIOError:
            taken = 0
        except OSError:                         # the connection is gone, and these bytes with it
            file.tx_buf = None
            self.counters["stream_dropped"] += len(data)
            self._dirty[file.id] = file
            return False
        self.counters["stream_out"] += taken
        file.tx_buf = data[taken:] if taken < len(data) else None
        return file.tx_buf is None

    def _program_gone(self, file: SocketFile) -> None:
        """EPOLLHUP on our end: the program's last copy is closed, unless both directions were shut."""
        if file.prog_shut_wr and file.eof_sent:
            self._reap_later(file)              # its SHUT_WR and our EOF look the same
            return
        self._closed_by_program(file)

    def _closed_by_program(self, file: SocketFile) -> None:
        """tcp_close: what the program wrote goes out beyond the send buffer, then FIN (or RST)."""
        if not file.sock.connected:             # a socket whose connect failed
            self.release(file)
            return
        data, reset = self._drain_end(file)
        if reset:
            self._abort(file)
            return
        if data and file.sock.connected:
            self.counters["stream_out"] += file.sock.send_on_close(data, self.clock())
        self.release(file)

    def _drain_end(self, file: SocketFile) -> tuple[bytes, bool]:
        """Everything in our end (and `tx_buf` before it); True if it ended in ECONNRESET."""
        chunks = [file.tx_buf] if file.tx_buf is not None else []
        file.tx_buf = None
        while True:
            try:
                data = file.end.recv(STREAM_CHUNK, MSG_DONTWAIT)
            except ConnectionResetError:
                return b"", True
            except OSError:
                break
            if not data:
                file.prog_eof = True
                break
            chunks.append(data)
        return b"".join(chunks), False

    def _abort(self, file: SocketFile) -> None:
        """tcp_close with unread data: RST (SO_LINGER 0), the unsent dropped."""
        self.counters["stream_resets"] += 1
        try:
            file.sock.setsockopt(SOL_SOCKET, SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.release(file)

    def _reap_later(self, file: SocketFile) -> None:
        file.reap = True
        if self._reaper is None:
            self._reaper = self.call_later(REAP_BROKEN, self._reap_broken)

    # ------------------------------------------------------------ TCP -> program

    def _to_program(self, file: SocketFile) -> bool:
        """TCP's bytes into our end while the pair takes them; TCP's EOF: shut our end for writing.
        True when nothing waits for the pair any more (after an error: time to show it)."""
        if file.eof_sent or file.hup or file.dead:
            return True
        sock, end = file.sock, file.end
        while True:
            data = file.rx_buf
            if data is None:
                if not sock.connected or sock.state in _CONNECTING:
                    return True
                try:
                    if sock.sk_err:             # the bytes before the error, leaving it for SO_ERROR
                        data = sock.proto.recvmsg(sock, STREAM_CHUNK, 0, self.clock())
                        if not data:
                            return True
                    else:
                        data = sock.recvmsg(STREAM_CHUNK, self.clock()).data
                except OSError:                 # EAGAIN: nothing waits
                    return True
                if not data:                    # EOF: read() returns 0 after the last byte
                    file.eof_sent = True
                    self._quietly_shut(end)
                    return True
                data = memoryview(data)
                self.counters["stream_in"] += len(data)
            try:
                sent = end.send(data)
            except BlockingIOError:
                file.rx_buf = data
                return False
            except OSError:                     # the program's end is gone: EPOLLHUP says so
                file.rx_buf = None
                file.hup = True
                return True
            file.rx_buf = data[sent:] if sent < len(data) else None
            if file.rx_buf is not None:
                return False

    @staticmethod
    def _quietly_shut(end: _socket.socket) -> None:
        try:
            end.shutdown(_socket.SHUT_WR)
        except OSError:
            pass

    # ------------------------------------------------------------ service

    def _stream_service(self, file: SocketFile) -> None:
        """The socket's readiness changed: connect done, bytes or room, EOF, an error, a connection to accept."""
        if file.dead:
            return
        sock = file.sock
        if file.end is None:
            if sock.state == TCP_LISTEN and sock.accept_queue and not file.marker and file.listen_name is not None:
                self._mark(file)
            return
        if file.filler_end is not None and sock.state not in _CONNECTING:
            self._unfill(file)
        if sock.connected:
            if not (file.prog_eof or file.hup or file.filler_end is not None):
                self._stream_from_program(file)
                if not self._alive(file):
                    return
            if self._to_program(file) and sock.sk_err:
                self._show_stream_error(file)
                return
        self._arm(file)

    def _show_stream_error(self, file: SocketFile) -> None:
        """The connection failed (reset, timed out): the program's end gets ECONNRESET/POLLERR (see above)."""
        left = array.array("i", [0])
        try:
            fcntl.ioctl(file.end.fileno(), termios.FIONREAD, left)
        except OSError:
            pass
        if not left[0]:
            program_end = self._borrow_program_end(file)
            if program_end is not None:
                try:
                    program_end.send(b"\0", MSG_DONTWAIT | MSG_NOSIGNAL)     # unread on our end when it closes
                except OSError:
                    pass
                finally:
                    program_end.close()
        self._stream_close(file)
        self._close_end(file)
        file.dead = file.broken = True
        file.rx_buf = file.tx_buf = None
        self.counters["stream_errors"] += 1
        self._reap_later(file)

    # ------------------------------------------------------------ connect and accept

    def _fill(self, file: SocketFile, call: Call) -> None:
        """Keep the program's end unwritable until the handshake is over (non-blocking connect)."""
        try:
            fd = call.file
        except OSError:
            return
        if fd < 0 or file.filler_end is not None:
            return
        end = _socket.socket(fileno=os.dup(fd))
        try:
            file.saved_sndbuf = end.getsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF) // 2
            end.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, 1)        # SOCK_MIN_SNDBUF
            while True:
                file.filler += end.send(_FILLER, MSG_DONTWAIT | MSG_NOSIGNAL)
        except BlockingIOError:
            pass
        except OSError:
            pass
        file.filler_end = end
        self._reap_later(file)                  # closed while connecting: released (our copy holds no EOF)
        self._arm(file)

    def _unfill(self, file: SocketFile) -> None:
        """The handshake is over: the filler read away, SO_SNDBUF back: the program's end polls POLLOUT."""
        end, file.filler_end = file.filler_end, None
        left, file.filler = file.filler, 0
        while left > 0:
            try:
                data = file.end.recv(min(left, STREAM_CHUNK), MSG_DONTWAIT)
            except OSError:
                break
            if not data:
                break
            left -= len(data)
        try:
            end.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, file.saved_sndbuf)
        except OSError:
            pass
        end.close()
        file.reap = False

    def _stream_sndbuf(self, file: SocketFile, value: bytes) -> bool:
        """SO_SNDBUF set by the program while the filler holds its end: applied when it goes. True if kept."""
        if file.filler_end is None:
            return False
        file.saved_sndbuf = int.from_bytes(value[:4].ljust(4, b"\0"), "little", signed=True)
        return True

    # ------------------------------------------------------------ trapped calls

    def _stream_shutdown(self, file: SocketFile, how: int, call: Call) -> None:
        """inet_shutdown on a connection: SHUT_WR after every byte the program wrote; SHUT_RD: EOF to it."""
        sock = file.sock
        now = self.clock()
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR) or not sock.connected or file.dead:
            try:
                sock.shutdown(how, now)     # a listener stops; else ENOTCONN, the directions shut all the same
            finally:
                if sock.state != TCP_LISTEN and sock.shutdown_mask & 2 and not file.prog_shut_wr and not file.dead:
                    file.prog_shut_wr = True
                    self._on_program_end(call, lambda end: end.shutdown(_socket.SHUT_WR))   # a write: EPIPE
            return
        if how != SHUT_RD and not file.prog_shut_wr:
            file.prog_shut_wr = True
            self._on_program_end(call, lambda end: end.shutdown(_socket.SHUT_WR))     # native send(): EPIPE
            data, reset = self._drain_end(file)
            if data:
                self.counters["stream_out"] += sock.send_on_close(data, now)
        if how != SHUT_WR and not file.eof_sent:
            file.eof_sent = file.read_shut = True
            file.rx_buf = None
            self._quietly_shut(file.end)        # a native recv() returns 0 after what the pair holds
        try:
            sock.shutdown(how, now)
        finally:
            self._arm(file)

    def _stream_recvmsg(self, file: SocketFile, size: int, flags: int, call: Call) -> Any:
        """recvfrom/recvmsg with an address or a control buffer: the pair's bytes (TCP gives neither)."""
        if file.end is None:                    # never connected (tcp_recvmsg)
            raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN))
        try:
            return self._native_recv(size, flags, call)
        except BlockingIOError:
            if call.nonblock or flags & MSG_DONTWAIT:
                raise
        return self._wait(file, _Reader("srecv", call.defer(), size, flags, call=call), file.sock.rcvtimeo)

    def _stream_sendmsg(self, file: SocketFile, data: bytes, flags: int, call: Call) -> Any:
        """sendto/sendmsg with an address or control data: into the pair (tcp_sendmsg ignores the address)."""
        sock = file.sock
        if not sock.connected or sock.state in _CONNECTING or sock.sk_err or file.dead:
            return sock.sendmsg(data, None, self.clock(), flags)      # its errno: EPIPE, EAGAIN, the error
        try:
            return self._native_send(data, flags, call)
        except BlockingIOError:
            if call.nonblock or flags & MSG_DONTWAIT:
                raise
        reader = _Reader("ssend", call.defer(), len(data), flags, call=call, data=data)
        return self._wait(file, reader, sock.sndtimeo)

    def _stream_reader(self, file: SocketFile, reader: _Reader) -> bool:
        """A pending srecv/ssend tried again; False while it would still block."""
        try:
            if reader.kind == "srecv":
                value = self._native_recv(reader.size, reader.flags, reader.call)
            else:
                value = self._native_send(reader.data, reader.flags, reader.call)
        except BlockingIOError:
            return False
        except OSError as error:
            self._cancel_reader_timer(reader)
            reader.deferred.fail(error.errno or errno.EIO)
            return True
        self._cancel_reader_timer(reader)
        reader.deferred.resolve(value)
        return True

    @staticmethod
    def _cancel_reader_timer(reader: _Reader) -> None:
        if reader.timer is not None:
            reader.timer.cancel()
            reader.timer = None

    def _native_recv(self, size: int, flags: int, call: Call) -> RecvResult:
        end = self._program_file(call)
        try:
            data = end.recv(size, flags | MSG_DONTWAIT)
        finally:
            end.detach()
        return RecvResult(data, None)

    def _native_send(self, data: bytes, flags: int, call: Call) -> int:
        end = self._program_file(call)
        try:
            return end.send(data, MSG_DONTWAIT | MSG_NOSIGNAL)
        finally:
            end.detach()
