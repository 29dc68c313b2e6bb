"""The trap's listener side and the trapped task: receive a trapped call, answer it,
inject an fd, check that it is still pending; reach the task's fds (pidfd_getfd) and
memory (process_vm_readv/writev, /proc/PID/mem as the fallback).

Part of `nodes/trap.py` (read its docstring first: the kernel facts these calls rely
on); import `trap`, which names everything defined here.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import select
import threading
from dataclasses import dataclass
from typing import Iterable

from .trap_abi import (
    _ADDFD, _NOTIF, _RESP, _U64, PIDFD_THREAD, SECCOMP_ADDFD_FLAG_SEND, SECCOMP_ADDFD_FLAG_SETFD,
    SECCOMP_IOCTL_NOTIF_ADDFD, SECCOMP_IOCTL_NOTIF_ID_VALID, SECCOMP_IOCTL_NOTIF_RECV,
    SECCOMP_IOCTL_NOTIF_SEND, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
    SECCOMP_USER_NOTIF_FLAG_CONTINUE, Iovec, _libc,
)

# ---------------------------------------------------------------------------------------------
# The listener side

@dataclass(frozen=True, slots=True)
class Notification:
    """One trapped call: `pid` is the calling thread's id (in our pid namespace)."""
    id: int
    pid: int
    nr: int
    arch: int
    args: tuple[int, int, int, int, int, int]


def recv_notification(listener: int) -> Notification | None:
    """The next trapped call, or None when its task died meanwhile (ENOENT).

    Blocks while none is pending: call it only when `listener` polls POLLIN.
    """
    buffer = bytearray(_NOTIF.size)          # the kernel insists on a zeroed buffer
    try:
        fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, buffer)
    except OSError as error:
        if error.errno == errno.ENOENT:
            return None
        raise
    nid, pid, _flags, nr, arch, _ip, *args = _NOTIF.unpack(buffer)
    return Notification(nid, pid, nr, arch, tuple(args))


def respond(listener: int, id: int, value: int = 0, error: int = 0, continue_: bool = False) -> bool:
    """Answer call `id`: return `value`, or fail with errno `error` (positive), or let the
    kernel run it natively (`continue_`). False when the call is gone (task died or was
    interrupted by a signal): nothing was answered, nothing to do."""
    if continue_:
        packed = _RESP.pack(id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)
    else:
        packed = _RESP.pack(id, value if not error else -1, -error if error else 0, 0)
    try:
        fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, bytearray(packed))
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def inject_fd(listener: int, id: int, our_fd: int, newfd_flags: int = 0, send: bool = True,
              newfd: int | None = None) -> int:
    """Install a copy of our file `our_fd` in the task of call `id`; its fd number there.

    `send`: answer the call with that number at the same time (ADDFD_FLAG_SEND, atomic).
    `newfd_flags`: O_CLOEXEC or 0. `newfd`: a given number (ADDFD_FLAG_SETFD), like dup2.
    Raises OSError(ENOENT) when the call is gone.
    """
    flags = (SECCOMP_ADDFD_FLAG_SEND if send else 0) | (SECCOMP_ADDFD_FLAG_SETFD if newfd is not None else 0)
    return fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD,
                       bytearray(_ADDFD.pack(id, flags, our_fd, newfd or 0, newfd_flags)))


def id_valid(listener: int, id: int) -> bool:
    """Whether call `id` still waits for an answer (its task alive, not interrupted)."""
    try:
        fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, bytearray(_U64.pack(id)))
    except OSError as error:
        if error.errno == errno.ENOENT:
            return False
        raise
    return True


def set_sync_wakeup(listener: int) -> bool:
    """Ask the kernel to wake the answered task on our CPU (Linux >= 6.6: ~5x faster round
    trips on a multi-CPU machine). False where the kernel does not know the flag."""
    try:   # the flags are the ioctl's argument itself, not a pointer to them
        fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
    except OSError as error:
        if error.errno in (errno.EINVAL, errno.ENOTTY):
            return False
        raise
    return True


def listener_state(listener: int) -> tuple[bool, bool]:
    """(a notification is waiting, no task uses the filter any more), without blocking."""
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    events = poller.poll(0)
    mask = events[0][1] if events else 0
    return bool(mask & select.POLLIN), bool(mask & select.POLLHUP)


# ---------------------------------------------------------------------------------------------
# The trapped task's fds and memory

def pidfd_open(pid: int) -> int:
    """A pidfd for thread or process `pid` (a thread that is not a group leader works on
    Linux >= 6.9 through PIDFD_THREAD, else through its thread group's leader)."""
    try:
        return os.pidfd_open(pid, PIDFD_THREAD)
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise
    try:
        return os.pidfd_open(pid, 0)
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise
    return os.pidfd_open(_thread_group_of(pid), 0)


def _thread_group_of(tid: int) -> int:
    try:
        with open(f"/proc/{tid}/status") as status:
            for line in status:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    raise OSError(errno.ESRCH, f"no thread {tid}")


def pidfd_getfd(pidfd: int, target_fd: int) -> int:
    """Our own duplicate (O_CLOEXEC) of the task's fd `target_fd`: the same open file."""
    result = _libc.syscall(_PIDFD_GETFD, pidfd, target_fd, 0)
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


_PIDFD_GETFD = 438      # the same number on every architecture (the unified table, Linux 5.6)


def fd_of_task(pid: int, target_fd: int) -> int:
    """pidfd_getfd for thread `pid`'s fd `target_fd` (OSError EBADF when it has none)."""
    pidfd = pidfd_open(pid)
    try:
        return pidfd_getfd(pidfd, target_fd)
    finally:
        os.close(pidfd)


class _Scratch(threading.local):
    """Per-thread ctypes buffers for process_vm_readv/writev (no allocation per call)."""
    SIZE, SLOTS = 1 << 16, 8

    def __init__(self) -> None:
        self.buffer = ctypes.create_string_buffer(self.SIZE)
        self.address = ctypes.addressof(self.buffer)
        self.local = Iovec(self.address, 0)
        self.remote = (Iovec * self.SLOTS)()
        self.local_ref = ctypes.byref(self.local)


_scratch = _Scratch()


def read_memory(pid: int, address: int, length: int) -> bytes:
    """`length` bytes of task `pid`'s memory at `address` (OSError EFAULT when unmapped)."""
    if length <= 0:
        return b""
    scratch = _scratch
    if length <= scratch.SIZE:
        base, buffer = scratch.address, None
    else:
        buffer = ctypes.create_string_buffer(length)
        base = ctypes.addressof(buffer)
    scratch.local.iov_base, scratch.local.iov_len = base, length
    remote = scratch.remote
    remote[0].iov_base, remote[0].iov_len = address, length
    got = _libc.process_vm_readv(pid, scratch.local_ref, 1, remote, 1, 0)
    if got < 0:
        code = ctypes.get_errno()
        if code in (errno.ENOSYS, errno.EPERM):
            return _proc_mem(pid, address, length, None)
        raise OSError(code, os.strerror(code))
    if got < length:   # crossed into an unmapped page
        raise OSError(errno.EFAULT, os.strerror(errno.EFAULT))
    return ctypes.string_at(base, length)


def write_memory(pid: int, address: int, data: bytes) -> None:
    """Write `data` into task `pid`'s memory at `address` (OSError EFAULT when not writable)."""
    write_memory_many(pid, ((address, data),))


def write_memory_many(pid: int, pieces: Iterable[tuple[int, bytes]]) -> None:
    """Several writes into task `pid`'s memory in one process_vm_writev: [(address, data)...]."""
    pieces = [(address, data) for address, data in pieces if data]
    if not pieces:
        return
    scratch = _scratch
    total = sum(len(data) for _, data in pieces)
    if total > scratch.SIZE or len(pieces) > scratch.SLOTS:
        if len(pieces) > 1:
            for piece in pieces:
                write_memory_many(pid, (piece,))
            return
        buffer = ctypes.create_string_buffer(bytes(pieces[0][1]), total)
        base = ctypes.addressof(buffer)
    else:
        base = scratch.address
        offset = 0
        for _, data in pieces:
            ctypes.memmove(base + offset, bytes(data), len(data))
            offset += len(data)
    scratch.local.iov_base, scratch.local.iov_len = base, total
    remote = scratch.remote if total <= scratch.SIZE else (Iovec * 1)()
    for index, (address, data) in enumerate(pieces):
        remote[index].iov_base, remote[index].iov_len = address, len(data)
    put = _libc.process_vm_writev(pid, scratch.local_ref, 1, remote, len(pieces), 0)
    if put == total:
        return
    code = ctypes.get_errno() if put < 0 else errno.EFAULT
    if put < 0 and code in (errno.ENOSYS, errno.EPERM):
        for address, data in pieces:
            _proc_mem(pid, address, len(data), bytes(data))
        return
    raise OSError(code, os.strerror(code))


def _proc_mem(pid: int, address: int, length: int, data: bytes | None) -> bytes:
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OSError(errno.ESRCH, f"no task {pid}") from None
    try:
        if data is None:
            got = os.pread(fd, length, address)
            if len(got) < length:
                raise OSError(errno.EFAULT, os.strerror(errno.EFAULT))
            return got
        if os.pwrite(fd, data, address) < length:
            raise OSError(errno.EFAULT, os.strerror(errno.EFAULT))
        return b""
    except OSError as error:
        if error.errno == errno.EIO:
            raise OSError(errno.EFAULT, os.strerror(errno.EFAULT)) from None
        raise
    finally:
        os.close(fd)
