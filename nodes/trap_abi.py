"""The trap's kernel ABI: architectures and syscall numbers, seccomp/prctl/filter constants,
struct layouts, ioctl numbers, the libc binding and the BPF filter builder. Data and pure
functions (no call is made at import).

Part of `nodes/trap.py` (read its docstring first: the design, and the kernel facts the
code relies on); import `trap`, which names everything defined here.
"""
from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

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
