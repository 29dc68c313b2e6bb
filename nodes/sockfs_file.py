"""sockfs's files (`SocketFile`, what a pending call waits as, a program's credentials) and
`PairRenewal`, the part of `Sockfs` that shows POLLERR by renewing a socket's pair.

Part of `nodes/sockfs.py` (read its docstring first); imported only by it."""
from __future__ import annotations

import array
import fcntl
import os
import socket as _socket
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
SO_COOKIE = 57              # a socket's 64-bit id, never reused (inode numbers are, at once)


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
    marker: bool = False            # a listener's byte in the pair: the program's end polls readable

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
