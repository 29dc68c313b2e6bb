"""sockfs's files (`SocketFile`, what a pending call waits as, a program's credentials),
`PairRenewal`, the part of `Sockfs` that shows POLLERR by renewing a socket's pair, and
`Placeholders`, stream sockets before connect()/listen().

Part of `nodes/sockfs.py` (read its docstring first); imported only by it."""
from __future__ import annotations

import array
import errno
import fcntl
import os
import select
import socket as _socket
import struct
import termios
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from . import trap
from .socket.constants import MSG_DONTWAIT, SOCK_STREAM
from .socket.inet import InetSocket
from .syscall_args import Call

RETRY_PUSH = 0.002          # seconds between attempts to push into a full pair
MAX_DATAGRAM = 1 << 17      # bytes read from our end per message (more than any IPv4 datagram)
NATIVE_BATCH = 64           # messages taken from a program's end per loop pass
REAP_BROKEN = 1.0           # seconds between checks that a broken file's program still holds it
CAP_NET_RAW = 13            # capability bit: raw sockets (and, here, the other network privileges)
UNHELD_CHECK = 0.1          # seconds between checks that a placeholder or listener is still held
SO_COOKIE = 57              # a socket's 64-bit id, never reused (inode numbers are, at once)
NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, NLMSG_ERROR = 4, 20, 2
_DIAG_REQUEST = struct.Struct("=IHHIIBBHIII")       # nlmsghdr, unix_diag_req (the cookie follows)


@dataclass(slots=True)
class _Pushed:
    """A datagram written into the pair: what a trapped recvmsg needs beside its bytes."""
    length: int
    address: tuple | None
    ancillary: list
    msg_flags: int


@dataclass(slots=True)
class _Reader:
    """A pending recvmsg (or accept/connect of a stream socket: `kind`)."""
    kind: str
    deferred: Any
    size: int = 0
    flags: int = 0
    control_size: int = 0
    timer: Any = None
    call: Any = None                # the pending call (its `file`: the program's end), when needed
    data: Any = None                # a pending stream send's bytes


@dataclass(eq=False)
class SocketFile:
    """One emulated socket's file: the socket, our end of its pair, the program end's inode."""
    id: int
    sock: InetSocket
    end: _socket.socket
    inode: int
    pid: int
    cookie: bytes = b""             # the program end's SO_COOKIE: tells it from a later socket with its inode
    pushed: deque = field(default_factory=deque)
    pushed_bytes: int = 0
    readers: deque = field(default_factory=deque)
    stalled: bool = False           # the pair was full: push again later
    read_shut: bool = False         # SHUT_RD: nothing more is written to the program
    native_send_errors: int = 0
    renewable: bool = False         # a trapped program's: its fd can be replaced (Call.replace)
    broken: bool = False            # our end closed to show POLLERR: renewed at the next trapped call
    # SOCK_STREAM (nodes/sockfs_stream.py)
    watch: Any = None               # our end is in sockfs's epoll (nodes/sockfs_stream.py)
    watch_mask: int = -1            # the events watched there (-1: not registered)
    rx_buf: Any = None              # bytes taken from TCP that the pair has not taken yet
    tx_buf: Any = None              # bytes read from our end that TCP has not taken yet
    filler: int = 0                 # bytes written from the program's end to keep it unwritable
    filler_end: Any = None          # our copy of the program's end while connecting (the filler's writer)
    saved_sndbuf: int = 0           # the program end's SO_SNDBUF before the filler
    prog_shut_wr: bool = False      # shutdown(SHUT_WR) by the program: EOF on our end is not a close
    prog_eof: bool = False          # EOF read from our end
    eof_sent: bool = False          # our end shut for writing (TCP's EOF, or SHUT_RD)
    hup: bool = False               # the program's end is gone
    dead: bool = False              # the connection failed: our end closed, never renewed
    reap: bool = False              # release when the program no longer holds its end (REAP_BROKEN)
    marker: bool = False            # a listener's connection pending: the program's end polls readable
    listen_name: Any = None         # a listener's: the abstract name its program end listens on natively
    marker_end: Any = None          # a listener's: our connection pending there (the marker)

    @property
    def stream(self) -> bool:
        return self.sock.type == SOCK_STREAM


def credentials(pid: int) -> tuple[int, list[int], bool, int]:
    """(uid, [gid, groups...], has CAP_NET_RAW, its process's pid (Tgid)) of a task, from /proc/PID/status."""
    uid, groups, caps, tgid = 0, [0], 0, pid
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key == "Uid":
                    uid = int(value.split()[1])         # effective
                elif key == "Gid":
                    groups = [int(value.split()[1])] + groups[1:]
                elif key == "Groups":
                    groups = groups[:1] + [int(g) for g in value.split()]
                elif key == "CapEff":
                    caps = int(value, 16)
                elif key == "Tgid":
                    tgid = int(value)
    except (OSError, ValueError, IndexError):
        pass
    return uid, groups, bool(caps >> CAP_NET_RAW & 1), tgid


def holds(pid: int, inode: int) -> bool:
    """Whether process `pid` has socket `inode` open. Its fds come and go while we look: one that
    vanishes between listdir and readlink is skipped, not taken for the answer (only a vanished
    process means no)."""
    link = f"socket:[{inode}]"
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == link:
                return True
        except OSError:
            continue
    return False


def unix_alive(diag: _socket.socket, inode: int, cookie: bytes) -> bool:
    """Whether unix socket `inode` (its SO_COOKIE `cookie`) still exists: any process holds it
    (sock_diag's unix_diag_get_exact: ENOENT once its last file is closed, ESTALE for another cookie)."""
    diag.send(_DIAG_REQUEST.pack(_DIAG_REQUEST.size + 8, SOCK_DIAG_BY_FAMILY, 1, 0, 0,
                                 _socket.AF_UNIX, 0, 0, 0xFFFFFFFF, inode, 0) + cookie)
    reply = diag.recv(4096)
    if struct.unpack_from("=H", reply, 4)[0] != NLMSG_ERROR:
        return True
    return struct.unpack_from("=i", reply, 16)[0] == 0


class PairRenewal:
    """`Sockfs`'s POLLERR: the attributes and methods it uses are Sockfs's."""

    files: dict
    by_inode: dict
    counters: dict
    call_later: Any
    _reaper: Any


    def _show_error(self, file: SocketFile) -> None:
        """Make the program's poll() see POLLERR for an error a native call cannot report.

        A unix socket shows POLLERR only with sk_err set, and the one way to set it from
        here is Linux's own: closing our end with data unread makes the program's end
        ECONNRESET (unix_release_sock), i.e. POLLERR | POLLHUP | POLLIN; datagrams not yet
        read stay readable there. The program's next trapped call on that fd (after POLLERR:
        recvmsg(MSG_ERRQUEUE), or recvfrom/getsockopt(SO_ERROR)) finds the file broken and
        `_renew` puts a new pair's end at its fd number before answering: Debian traceroute
        and glibc's resolver read errors exactly this way. Other copies of the old file
        (dup, fork) stay broken (EOF): a known limit."""
        program_end = self._borrow_program_end(file)
        if program_end is None:
            return
        try:
            program_end.send(b"\0")               # unread on our end when it closes
        except OSError:
            return
        finally:
            program_end.close()
        self._close_end(file)
        if self.by_inode.get(file.inode) == file.id:    # the inode may be another socket's by now
            del self.by_inode[file.inode]
        file.broken = True
        self.counters["renewed"] = self.counters.get("renewed", 0) + 1
        if self._reaper is None:
            self._reaper = self.call_later(REAP_BROKEN, self._reap_broken)

    def _borrow_program_end(self, file: SocketFile) -> _socket.socket | None:
        """A copy of the program's end, taken from the socket's creator (pidfd_getfd)."""
        link = f"socket:[{file.inode}]"
        try:
            for fd in os.listdir(f"/proc/{file.pid}/fd"):
                if os.readlink(f"/proc/{file.pid}/fd/{fd}") == link:
                    pidfd = os.pidfd_open(file.pid)
                    try:
                        end = _socket.socket(fileno=trap.pidfd_getfd(pidfd, int(fd)))
                    finally:
                        os.close(pidfd)
                    if end.getsockopt(_socket.SOL_SOCKET, SO_COOKIE, 8) == file.cookie:
                        return end
                    end.close()                 # the inode's, not our program end's
                    return None
        except OSError:
            return None
        return None

    def _renew(self, file: SocketFile, call: Call) -> None:
        """A trapped call on a broken file: a new pair, its end at the program's fd, the unread moved."""
        old_end = _socket.socket(fileno=call.file)
        try:
            old_end.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)    # the ECONNRESET we caused
            left = array.array("i", [0])
            fcntl.ioctl(old_end.fileno(), termios.FIONREAD, left)
            while file.pushed and file.pushed_bytes > left[0]:
                file.pushed_bytes -= file.pushed.popleft().length
            unread, remaining = [], left[0]
            while remaining > 0:                # (the peer is gone: b"" is EOF, not a datagram)
                try:
                    data = old_end.recv(MAX_DATAGRAM, MSG_DONTWAIT)
                except OSError:
                    break
                if not data:
                    break
                unread.append(data)
                remaining -= len(data)
            nonblock = not old_end.getblocking()
        finally:
            old_end.detach()
        theirs = self._new_pair(file)
        theirs.setblocking(not nonblock)
        for data in unread:
            file.end.send(data)
        call.replace(theirs.fileno())
        call.adopt(theirs.detach())
        file.broken = False

    def _reap_broken(self) -> None:
        """Release broken files whose program closed them without another trapped call."""
        self._reaper = None
        broken = [file for file in self.files.values() if file.broken or file.reap]
        for file in broken:
            if not holds(file.pid, file.inode):
                self.release(file)
        if any(file.broken or file.reap for file in self.files.values()):
            self._reaper = self.call_later(REAP_BROKEN, self._reap_broken)


class Placeholders:
    """`Sockfs`'s stream sockets before connect()/listen() (see docs/programs.md, "Stream sockets"):
    the program's end is an unconnected unix socket, the same socket to the end. connect()
    connects it to a new end of ours (`_attach`); listen() makes it a unix listener (`_listen_native`),
    readable while a connection of ours waits in it (`_mark`). Neither gives an EOF when the
    program closes it: sock_diag says when its last file is gone (`_unheld_scan`).
    The attributes and methods it uses are Sockfs's."""

    files: dict
    by_inode: dict
    call_later: Any
    release: Any
    _stream_open: Any
    _quietly: Any
    _unheld: Any = None                 # the timer of `_unheld_tick`
    _diag: Any = None                   # a NETLINK_SOCK_DIAG socket (`unix_alive`)
    _bare: dict                         # sock_id -> file: placeholders and listeners (no pair)

    def _placeholders_init(self) -> None:
        self._bare = {}

    @staticmethod
    def _program_file(call: Call) -> _socket.socket:
        fd = call.file
        if fd < 0:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return _socket.socket(fileno=fd)

    def _placeholder(self, file: SocketFile) -> _socket.socket:
        """A new stream socket's program end until connect()/listen(): an unconnected unix socket."""
        theirs = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        file.end = None                         # type: ignore[assignment]
        file.inode = os.fstat(theirs.fileno()).st_ino
        file.cookie = theirs.getsockopt(_socket.SOL_SOCKET, SO_COOKIE, 8)
        self.by_inode[file.inode] = file.id
        self._bare[file.id] = file
        self._unheld_later()                    # closed unconnected: no EOF says so (see `_unheld_scan`)
        return theirs

    def _attach(self, file: SocketFile, call: Call) -> None:
        """connect() began: the program's socket itself (its open file: every dup, fork and epoll
        of it) is connected to a new end of ours, through a listener of our own."""
        listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            listener.bind(b"")                  # autobind: an abstract name of its own
            listener.listen(4)
            listener.setblocking(False)
            self._on_program(call, lambda program: program.connect(listener.getsockname()))   # done at once
            while True:                         # (anyone could connect to the name: ours is our pid's)
                ours, _ = listener.accept()
                credentials = ours.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
                if struct.unpack("3i", credentials)[0] == os.getpid():
                    break
                ours.close()
        finally:
            listener.close()
        ours.setblocking(False)
        ours.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, max(file.sock.rcvbuf // 2, 4096))
        file.end = ours
        self._stream_open(file)

    def _listen_native(self, file: SocketFile, call: Call) -> None:
        """listen() began: the placeholder listens itself (unix, an abstract name): it polls readable
        while a connection of ours waits there (`_mark`), as a TCP listener while its queue holds one."""
        def listen(program: _socket.socket) -> None:
            program.bind(b"")
            program.listen(8)
            file.listen_name = program.getsockname()
        self._on_program(call, listen)

    def _mark(self, file: SocketFile) -> None:
        marker = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_NONBLOCK)
        try:
            marker.connect(file.listen_name)
        except OSError:
            marker.close()
            return
        file.marker_end, file.marker = marker, True

    def _unmark(self, file: SocketFile, call: Call | None) -> None:
        """accept() emptied the queue: our waiting connection taken back from the program's listener."""
        if not file.marker or file.sock.accept_queue or call is None:
            return
        file.marker = False

        def take(program: _socket.socket) -> None:
            poller = select.poll()
            poller.register(program.fileno(), select.POLLIN)
            if poller.poll(0):                  # (it may block: the program's file, its O_NONBLOCK)
                program.accept()[0].close()
        self._quietly(lambda: self._on_program(call, take))
        if file.marker_end is not None:
            file.marker_end.close()
            file.marker_end = None

    def _on_program(self, call: Call, action: Any) -> None:
        """`action` on the program's own socket (our duplicate of its file); its errors raised."""
        program = self._program_file(call)
        try:
            action(program)
        finally:
            program.detach()

    def _unheld_later(self) -> None:
        if self._unheld is None:
            self._unheld = self.call_later(UNHELD_CHECK, self._unheld_tick)

    def _unheld_tick(self) -> None:
        self._unheld = None
        self._unheld_scan()
        if self._bare:
            self._unheld_later()

    def _unheld_scan(self) -> bool:
        """Release the placeholders and listeners (no pair: no EOF) whose last file is closed. True if any."""
        if self._diag is None:
            self._diag = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
        gone = False
        for file in list(self._bare.values()):
            if self.files.get(file.id) is not file or file.end is not None:
                del self._bare[file.id]         # released, or connected: its pair's EOF tells
            elif not unix_alive(self._diag, file.inode, file.cookie):
                del self._bare[file.id]
                self.release(file)
                gone = True
        return gone

    def _placeholders_final(self) -> None:
        if self._unheld is not None:
            self._unheld.cancel()
            self._unheld = None
        if self._diag is not None:
            self._diag.close()
            self._diag = None
