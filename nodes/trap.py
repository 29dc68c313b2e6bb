"""Seccomp user notification: every kernel layout, number and call of the syscall trap, in one place.

Before changing this file, read seccomp_unotify(2), seccomp(2), pidfd_getfd(2),
process_vm_readv(2) and issue 12's design section. No socket semantics here:
`nodes/syscalls.py` decides what a trapped call means; this module only knows
how a call is trapped, read, answered and how memory and fds of the trapped
task are reached.

How a program comes to be trapped (`spawn_trapped`): the child, after fork and
before exec, sets PR_SET_NO_NEW_PRIVS and installs `build_filter()` with
SECCOMP_FILTER_FLAG_NEW_LISTENER, which gives it the listener fd. It cannot pass
that fd with SCM_RIGHTS (sendmsg is itself trapped, and nobody holds the listener
yet to answer it), so it writes the fd's number and its pid on a pipe and waits;
the parent takes the listener with pidfd_getfd(2) and acknowledges; the child
closes its own copy and execs. So the parent holds the listener before the program
makes its first trapped call (without a listener a trapped call fails with ENOSYS)
and the program never holds a listener on itself (so the calls of a program whose
node died fail with ENOSYS instead of hanging). The filter is inherited across
fork and exec: every descendant is trapped by the same listener.

The filter traps exactly: socket (only for the families given, AF_INET and AF_INET6
by default: AF_UNIX, AF_NETLINK... never leave the program), bind, connect, listen,
accept, accept4, getsockname, getpeername, setsockopt, getsockopt, shutdown,
sendmsg, recvmsg, sendmmsg, recvmmsg, and sendto/recvfrom only when their address
argument (arg 4) is non-NULL, so plain send()/recv() stay native. A foreign
`seccomp_data.arch` (i386 int 0x80, x32 numbers on x86_64) kills the process: it
would otherwise be a way around the trap.

Facts the code relies on (kernel >= 5.14; SYNC_WAKE_UP >= 6.6):
* NOTIF_RECV takes a zeroed `seccomp_notif` and blocks while no notification is
  pending: call it only when the listener polls POLLIN. It fails with ENOENT when
  the task died (or was interrupted by a signal) after its notification was queued.
* The listener polls POLLHUP once no task uses the filter any more.
* A pending notification becomes invalid (ID_VALID: ENOENT) when its task dies or
  a signal interrupts the call (the call is then restarted, with a new id, or fails
  with EINTR). Reading the task's memory by pid is only trustworthy if ID_VALID
  still holds afterwards (the pid could have been reused).
* ADDFD with SECCOMP_ADDFD_FLAG_SEND installs our file in the task and answers the
  call with the new fd number atomically.
* `seccomp_notif.pid` is the thread id in our pid namespace; pidfd_open needs the
  thread-group leader (or PIDFD_THREAD, Linux >= 6.9).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import select
import struct
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

# ---------------------------------------------------------------------------------------------
# Architecture and syscall numbers

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7
X32_SYSCALL_BIT = 0x40000000

_NAMES = ("socket", "socketpair", "bind", "listen", "accept", "accept4", "connect", "getsockname",
          "getpeername", "sendto", "recvfrom", "setsockopt", "getsockopt", "shutdown", "sendmsg",
          "recvmsg", "sendmmsg", "recvmmsg", "seccomp", "pidfd_open", "pidfd_getfd",
          "process_vm_readv", "process_vm_writev", "io_uring_setup")


@dataclass(frozen=True)
class Arch:
    """One supported architecture: its audit arch value and its syscall numbers by name."""
    machine: str
    audit_arch: int
    numbers: Mapping[str, int]

    def __getattr__(self, name: str) -> int:  # ARCH.socket -> 41
        try:
            return self.numbers[name]
        except KeyError:
            raise AttributeError(name) from None

    def name_of(self, nr: int) -> str:
        for name, number in self.numbers.items():
            if number == nr:
                return name
        return f"syscall {nr}"


ARCHES = {
    "x86_64": Arch("x86_64", AUDIT_ARCH_X86_64, dict(zip(_NAMES, (
        41, 53, 49, 50, 43, 288, 42, 51, 52, 44, 45, 54, 55, 48, 46, 47, 307, 299, 317, 434, 438,
        310, 311, 425)))),
    "aarch64": Arch("aarch64", AUDIT_ARCH_AARCH64, dict(zip(_NAMES, (
        198, 199, 200, 201, 202, 242, 203, 204, 205, 206, 207, 208, 209, 210, 211, 212, 269, 243,
        277, 434, 438, 270, 271, 425)))),
}

# The syscalls the filter traps (sendto/recvfrom: only with an address, see build_filter).
TRAPPED = ("socket", "bind", "connect", "listen", "accept", "accept4", "getsockname", "getpeername",
           "setsockopt", "getsockopt", "shutdown", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg",
           "sendto", "recvfrom")


class TrapUnavailable(RuntimeError):
    """Programs cannot be trapped here; `str()` says why (not root, old kernel, arch, container)."""


def current_arch() -> Arch:
    """The running architecture, or TrapUnavailable naming it."""
    machine = platform.machine()
    arch = ARCHES.get(machine)
    if arch is None or struct.calcsize("P") != 8 or sys.byteorder != "little":
        raise TrapUnavailable(f"syscall trapping supports x86_64 and aarch64 (64-bit little endian); "
                              f"this is {machine} ({8 * struct.calcsize('P')}-bit {sys.byteorder} endian)")
    return arch


# ---------------------------------------------------------------------------------------------
# Constants (include/uapi/linux/seccomp.h, prctl.h, filter.h)

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_NOTIF_SIZES = 3
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1 << 0
SECCOMP_ADDFD_FLAG_SETFD = 1 << 0
SECCOMP_ADDFD_FLAG_SEND = 1 << 1
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP = 1 << 0
PR_SET_NO_NEW_PRIVS = 38
PIDFD_THREAD = os.O_EXCL  # Linux >= 6.9: a pidfd for a thread, not only a thread-group leader

# classic BPF opcodes
BPF_LD_W_ABS = 0x20      # BPF_LD | BPF_W | BPF_ABS
BPF_JEQ_K = 0x15         # BPF_JMP | BPF_JEQ | BPF_K
BPF_JGT_K = 0x25         # BPF_JMP | BPF_JGT | BPF_K
BPF_JGE_K = 0x35         # BPF_JMP | BPF_JGE | BPF_K
BPF_RET_K = 0x06         # BPF_RET | BPF_K


# ---------------------------------------------------------------------------------------------
# Struct layouts

class SeccompData(ctypes.Structure):
    _fields_ = [("nr", ctypes.c_int32), ("arch", ctypes.c_uint32),
                ("instruction_pointer", ctypes.c_uint64), ("args", ctypes.c_uint64 * 6)]


class SeccompNotif(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("pid", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("data", SeccompData)]


class SeccompNotifResp(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("val", ctypes.c_int64), ("error", ctypes.c_int32),
                ("flags", ctypes.c_uint32)]


class SeccompNotifAddfd(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("flags", ctypes.c_uint32), ("srcfd", ctypes.c_uint32),
                ("newfd", ctypes.c_uint32), ("newfd_flags", ctypes.c_uint32)]


class SeccompNotifSizes(ctypes.Structure):
    _fields_ = [("seccomp_notif", ctypes.c_uint16), ("seccomp_notif_resp", ctypes.c_uint16),
                ("seccomp_data", ctypes.c_uint16)]


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.c_void_p)]


class Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


assert ctypes.sizeof(SeccompData) == 64 and ctypes.sizeof(SeccompNotif) == 80
assert ctypes.sizeof(SeccompNotifResp) == 24 and ctypes.sizeof(SeccompNotifAddfd) == 24

# ioctl numbers: _IOC(dir, '!', nr, size); dir 1 = write, 2 = read, 3 = both
_IOC_WRITE, _IOC_READ = 1, 2


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord("!") << 8) | nr


SECCOMP_IOCTL_NOTIF_RECV = _ioc(_IOC_WRITE | _IOC_READ, 0, ctypes.sizeof(SeccompNotif))
SECCOMP_IOCTL_NOTIF_SEND = _ioc(_IOC_WRITE | _IOC_READ, 1, ctypes.sizeof(SeccompNotifResp))
SECCOMP_IOCTL_NOTIF_ID_VALID = _ioc(_IOC_WRITE, 2, 8)
SECCOMP_IOCTL_NOTIF_ADDFD = _ioc(_IOC_WRITE, 3, ctypes.sizeof(SeccompNotifAddfd))
SECCOMP_IOCTL_NOTIF_SET_FLAGS = _ioc(_IOC_WRITE, 4, 8)

_NOTIF = struct.Struct("=QIIiIQ6Q")   # seccomp_notif: id, pid, flags, nr, arch, ip, args[6]
_RESP = struct.Struct("=QqiI")       # seccomp_notif_resp: id, val, error, flags
_ADDFD = struct.Struct("=QIIII")     # seccomp_notif_addfd: id, flags, srcfd, newfd, newfd_flags
_U64 = struct.Struct("=Q")


# ---------------------------------------------------------------------------------------------
# libc

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
try:   # glibc and musl have them; importing this module elsewhere must still work
    _libc.process_vm_readv.restype = ctypes.c_ssize_t
    _libc.process_vm_readv.argtypes = [ctypes.c_int, ctypes.POINTER(Iovec), ctypes.c_ulong,
                                       ctypes.POINTER(Iovec), ctypes.c_ulong, ctypes.c_ulong]
    _libc.process_vm_writev.restype = ctypes.c_ssize_t
    _libc.process_vm_writev.argtypes = _libc.process_vm_readv.argtypes
    _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
except AttributeError:
    pass


def _syscall(nr: int, *args) -> int:
    result = _libc.syscall(ctypes.c_long(nr), *args)
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


# ---------------------------------------------------------------------------------------------
# The BPF program

def build_filter(arch: Arch | None = None, families: Iterable[int] | None = (2, 10)) -> bytes:
    """The classic BPF program, as bytes of `struct sock_filter`.

    `families`: socket() traps only for these domains (default AF_INET, AF_INET6);
    None traps every socket() (the front end then lets the others CONTINUE).
    """
    arch = arch or current_arch()
    nr_of = arch.numbers
    offset_arch, offset_nr = 4, 0

    def arg_low(index: int) -> int:
        return 16 + 8 * index          # little endian: the low word first

    prog: list = [(BPF_LD_W_ABS, offset_arch, None, None),
                  (BPF_JEQ_K, arch.audit_arch, None, "kill"),
                  (BPF_LD_W_ABS, offset_nr, None, None)]
    if arch.audit_arch == AUDIT_ARCH_X86_64:   # x32 numbers share the arch value
        prog.append((BPF_JGE_K, X32_SYSCALL_BIT, "kill", None))
    trapped = sorted(nr_of[name] for name in TRAPPED)
    # hot path: read, write, poll... are outside the trapped range on both arches
    prog += [(BPF_JGE_K, trapped[0], None, "allow"), (BPF_JGT_K, trapped[-1], "allow", None)]
    for name in TRAPPED:
        if name in ("sendto", "recvfrom"):
            prog += [(BPF_JEQ_K, nr_of[name], None, f"after_{name}"),
                     (BPF_LD_W_ABS, arg_low(4), None, None),
                     (BPF_JEQ_K, 0, None, "notify"),
                     (BPF_LD_W_ABS, arg_low(4) + 4, None, None),
                     (BPF_JEQ_K, 0, "allow", "notify"),
                     ("label", f"after_{name}")]
        elif name == "socket" and families is not None:
            prog += [(BPF_JEQ_K, nr_of[name], None, "after_socket"),
                     (BPF_LD_W_ABS, arg_low(0), None, None)]   # int domain: the low word only
            prog += [(BPF_JEQ_K, family, "notify", None) for family in families]
            prog += [(BPF_RET_K, SECCOMP_RET_ALLOW, None, None), ("label", "after_socket")]
        else:
            prog.append((BPF_JEQ_K, nr_of[name], "notify", None))
    prog += [("label", "allow"), (BPF_RET_K, SECCOMP_RET_ALLOW, None, None),
             ("label", "notify"), (BPF_RET_K, SECCOMP_RET_USER_NOTIF, None, None),
             ("label", "kill"), (BPF_RET_K, SECCOMP_RET_KILL_PROCESS, None, None)]
    return _assemble(prog)


def _assemble(prog: Sequence[tuple]) -> bytes:
    """Items: (code, k, jump_true, jump_false) with labels or None (= next), or ("label", name)."""
    labels, pc = {}, 0
    for item in prog:
        if item[0] == "label":
            labels[item[1]] = pc
        else:
            pc += 1
    out, pc = [], 0
    for item in prog:
        if item[0] == "label":
            continue
        code, k, jt, jf = item
        offsets = [labels[target] - pc - 1 if target else 0 for target in (jt, jf)]
        if not all(0 <= offset <= 255 for offset in offsets):
            raise ValueError(f"BPF jump out of range at {pc}: {item}")
        out.append(struct.pack("=HBBI", code, offsets[0], offsets[1], k))
        pc += 1
    if pc > 4096:
        raise ValueError("BPF program too long")
    return b"".join(out)


# ---------------------------------------------------------------------------------------------
# Availability

_availability: list = []


def unavailable_reason() -> str | None:
    """Why programs cannot be trapped here, or None (cached; installs nothing)."""
    if not _availability:
        _availability.append(_probe())
    return _availability[0]


def ensure_available() -> None:
    reason = unavailable_reason()
    if reason is not None:
        raise TrapUnavailable(reason)


def _probe() -> str | None:
    try:
        arch = current_arch()
    except TrapUnavailable as error:
        return str(error)
    if os.geteuid() != 0:
        return ("trapping programs' syscalls needs root (reading and writing their memory and fds "
                f"with process_vm_readv and pidfd_getfd); running as uid {os.geteuid()}")
    release = platform.release()
    try:
        major, minor = (int(part) for part in release.split(".")[:2])
    except ValueError:
        major, minor = 0, 0
    if (major, minor) < (5, 14):
        return f"seccomp user notification with ADDFD_FLAG_SEND needs Linux >= 5.14; this is {release}"
    try:
        with open("/proc/sys/kernel/seccomp/actions_avail") as file:
            actions = file.read().split()
    except OSError as error:
        return f"seccomp is not available ({error})"
    if "user_notif" not in actions:
        return f"seccomp user notification is not available (actions_avail: {' '.join(actions)})"
    sizes = SeccompNotifSizes()
    try:
        _syscall(arch.seccomp, SECCOMP_GET_NOTIF_SIZES, 0, ctypes.byref(sizes))
    except OSError as error:
        return f"the seccomp() syscall is refused here (container policy?): {error.strerror}"
    if (sizes.seccomp_notif < ctypes.sizeof(SeccompNotif)
            or sizes.seccomp_notif_resp < ctypes.sizeof(SeccompNotifResp)
            or sizes.seccomp_data < ctypes.sizeof(SeccompData)):
        return f"unexpected seccomp struct sizes from the kernel: {sizes.seccomp_notif}/" \
               f"{sizes.seccomp_notif_resp}/{sizes.seccomp_data}"
    return None


# ---------------------------------------------------------------------------------------------
# Installing the filter (in the process to be trapped)

def install_filter(program: bytes | None = None) -> int:
    """PR_SET_NO_NEW_PRIVS, then the filter with NEW_LISTENER: the listener fd (O_CLOEXEC).

    Irreversible for the calling process and all its descendants. Raises OSError
    (EBUSY: this process is already under a filter with a listener, e.g. a program
    already running on a node).
    """
    arch = current_arch()
    program = build_filter(arch) if program is None else program
    code = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.addressof(code))
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        code_ = ctypes.get_errno()
        raise OSError(code_, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(code_)}")
    return _syscall(arch.seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER,
                    ctypes.byref(fprog))


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


# ---------------------------------------------------------------------------------------------
# The launcher

HANDOFF_TIMEOUT = 10.0
_HANDOFF = struct.Struct("=cii")    # b"L", pid, listener fd | b"E", errno, 0


def spawn_trapped(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None,
                  stdin=None, stdout=None, stderr=None, preexec: Callable[[], None] | None = None,
                  families: Iterable[int] | None = (2, 10), **popen_kwargs):
    """Start `argv` with its socket syscalls trapped: (subprocess.Popen, listener fd).

    The child runs `preexec` (namespaces, hostname...), installs the filter and hands
    the listener to us before it execs, so we hold it before the program's first
    trapped call. Popen waits for the child's exec, so the hand-over is served by a
    short-lived thread here. The child runs Python between fork and exec (preexec_fn):
    call this from a process without busy threads (the launcher's zygote, a node
    kernel's main thread before ZeroMQ's I/O threads hold locks), as subprocess warns. The caller owns the listener fd (close it when done) and must
    answer its notifications, or the program's socket calls wait forever. Raises
    TrapUnavailable (with the reason) when trapping is impossible here.
    """
    import subprocess

    ensure_available()
    program = build_filter(current_arch(), families)
    to_parent_r, to_parent_w = os.pipe2(os.O_CLOEXEC)
    to_child_r, to_child_w = os.pipe2(os.O_CLOEXEC)
    outcome: dict = {}

    def child() -> None:          # after fork, before exec: no trapped call may happen here
        os.close(to_parent_r)
        os.close(to_child_w)
        if preexec is not None:
            preexec()
        try:
            listener = install_filter(program)
        except OSError as error:
            os.write(to_parent_w, _HANDOFF.pack(b"E", error.errno or 0, 0))
            raise
        os.write(to_parent_w, _HANDOFF.pack(b"L", os.getpid(), listener))
        if os.read(to_child_r, 1) != b"K":
            raise TrapUnavailable("the parent did not take the seccomp listener")
        os.close(listener)        # the program must never hold a listener on itself
        os.close(to_child_r)
        os.close(to_parent_w)

    def take_listener() -> None:  # in the parent, while Popen waits for the child's exec
        try:
            readable, _, _ = select.select([to_parent_r], [], [], HANDOFF_TIMEOUT)
            message = os.read(to_parent_r, _HANDOFF.size) if readable else b""
            if len(message) != _HANDOFF.size:
                outcome.setdefault("error", "the child exited or timed out before installing the filter")
                return
            kind, first, second = _HANDOFF.unpack(message)
            if kind == b"E":
                outcome["error"] = f"installing the seccomp filter failed: {os.strerror(first)}" + (
                    " (already under a filter with a listener: a program on a node?)"
                    if first == errno.EBUSY else "")
                return
            pidfd = os.pidfd_open(first)
            try:
                outcome["listener"] = pidfd_getfd(pidfd, second)
            finally:
                os.close(pidfd)
            os.write(to_child_w, b"K")
        except OSError as error:
            outcome["error"] = f"taking the listener from the child failed: {error}"
        finally:
            os.close(to_child_w)

    taker = threading.Thread(target=take_listener, name="trap-handoff", daemon=True)
    taker.start()
    process = None
    failure: BaseException | None = None
    try:
        process = subprocess.Popen(list(argv), env=env, cwd=cwd, stdin=stdin, stdout=stdout,
                                   stderr=stderr, preexec_fn=child, **popen_kwargs)
    except BaseException as error:  # noqa: B902 - re-raised below, after the clean-up
        failure = error
    finally:
        os.close(to_parent_w)     # the taker sees EOF if the child never wrote
        os.close(to_child_r)
        taker.join(HANDOFF_TIMEOUT + 1)
        os.close(to_parent_r)
    if failure is None and "listener" in outcome:
        return process, outcome["listener"]
    if "listener" in outcome:
        os.close(outcome["listener"])
    if process is not None:       # exec succeeded without a listener: never let it run
        process.kill()
        process.wait()
    if failure is not None and not isinstance(failure, subprocess.SubprocessError):
        raise failure             # e.g. FileNotFoundError for argv[0], as subprocess raises it
    raise TrapUnavailable(outcome.get("error", f"the child failed before exec: {failure}")) from failure
