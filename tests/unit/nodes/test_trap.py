"""The trap's layouts and BPF program, and the front end's codecs, without processes.

The BPF program is run here by a small classic-BPF interpreter over seccomp_data, so
every verdict (notify, allow, kill) is checked for both architectures in microseconds.
"""
from __future__ import annotations

import ctypes
import errno
import socket
import struct

import pytest

from nodes import syscalls, trap
from nodes.syscalls import AF_INET, AF_INET6, Deferred, SockAddr, decode_sockaddr, encode_sockaddr
from tests.conftest import require_trap

pytestmark = pytest.mark.timeout(30)

NOTIFY, ALLOW, KILL = trap.SECCOMP_RET_USER_NOTIF, trap.SECCOMP_RET_ALLOW, trap.SECCOMP_RET_KILL_PROCESS


def run_bpf(program: bytes, nr: int, arch: int, args=(0, 0, 0, 0, 0, 0)) -> int:
    """Classic BPF, the subset seccomp filters use here: ld [k], jeq/jgt/jge #k, ret #k."""
    args = tuple(args) + (0,) * (6 - len(args))
    data = struct.pack("=IIQ6Q", nr & 0xFFFFFFFF, arch, 0, *args)
    insns = [struct.unpack_from("=HBBI", program, offset) for offset in range(0, len(program), 8)]
    pc, accumulator = 0, 0
    for _ in range(len(insns) + 1):
        code, jt, jf, k = insns[pc]
        if code == trap.BPF_LD_W_ABS:
            accumulator = struct.unpack_from("=I", data, k)[0]
            pc += 1
        elif code in (trap.BPF_JEQ_K, trap.BPF_JGT_K, trap.BPF_JGE_K):
            taken = {trap.BPF_JEQ_K: accumulator == k, trap.BPF_JGT_K: accumulator > k,
                     trap.BPF_JGE_K: accumulator >= k}[code]
            pc += 1 + (jt if taken else jf)
        elif code == trap.BPF_RET_K:
            return k
        else:
            raise AssertionError(f"unexpected BPF opcode {code:#x}")
    raise AssertionError("the program did not return")


@pytest.mark.parametrize("arch", list(trap.ARCHES.values()), ids=list(trap.ARCHES))
def test_the_filter_traps_exactly_the_socket_calls(arch):
    program = trap.build_filter(arch)
    verdict = lambda name, *args: run_bpf(program, arch.numbers[name], arch.audit_arch, args)
    for name in ("bind", "connect", "listen", "accept", "accept4", "getsockname", "getpeername", "setsockopt",
                 "getsockopt", "shutdown", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg"):
        assert verdict(name, 3) == NOTIFY, name
    assert verdict("socket", AF_INET, socket.SOCK_DGRAM) == NOTIFY
    assert verdict("socket", AF_INET6, socket.SOCK_STREAM) == NOTIFY
    assert verdict("socket", (0xFFFF << 32) | AF_INET) == NOTIFY          # an int: the low word counts
    assert verdict("socket", socket.AF_UNIX, socket.SOCK_STREAM) == ALLOW
    assert verdict("socket", socket.AF_NETLINK) == ALLOW
    for name in ("sendto", "recvfrom"):
        assert verdict(name, 3, 0x1000, 10, 0, 0, 0) == ALLOW             # send()/recv(): native
        assert verdict(name, 3, 0x1000, 10, 0, 0x7FFC_0000_1000, 16) == NOTIFY
        assert verdict(name, 3, 0x1000, 10, 0, 0x1_0000_0000, 16) == NOTIFY   # high word only
        assert verdict(name, 3, 0x1000, 10, 0, 0x20, 16) == NOTIFY
    for nr in (0, 1, 3, 7, 232, 281, 500, arch.socketpair, arch.io_uring_setup):   # read, write, close...
        assert run_bpf(program, nr, arch.audit_arch) == ALLOW, nr


@pytest.mark.parametrize("arch", list(trap.ARCHES.values()), ids=list(trap.ARCHES))
def test_a_foreign_arch_is_killed(arch):
    program = trap.build_filter(arch)
    assert run_bpf(program, arch.socket, 0x40000003, (AF_INET,)) == KILL        # i386 (int 0x80)
    assert run_bpf(program, 0, 0x40000003) == KILL


def test_x32_syscall_numbers_are_killed():
    arch = trap.ARCHES["x86_64"]
    program = trap.build_filter(arch)
    assert run_bpf(program, trap.X32_SYSCALL_BIT | arch.socket, arch.audit_arch, (AF_INET,)) == KILL
    assert run_bpf(program, trap.X32_SYSCALL_BIT | 0, arch.audit_arch) == KILL


def test_families_none_traps_every_socket_call():
    arch = trap.ARCHES["x86_64"]
    program = trap.build_filter(arch, families=None)
    assert run_bpf(program, arch.socket, arch.audit_arch, (socket.AF_UNIX, 1, 0, 0, 0, 0)) == NOTIFY


def test_layouts_and_ioctl_numbers_match_the_uapi_header():
    assert ctypes.sizeof(trap.SeccompNotif) == 80
    assert ctypes.sizeof(trap.SeccompNotifResp) == 24
    assert ctypes.sizeof(trap.SeccompNotifAddfd) == 24
    assert trap.SeccompNotif.data.offset == 16 and trap.SeccompData.args.offset == 16
    assert trap.SECCOMP_IOCTL_NOTIF_RECV == 0xC0502100
    assert trap.SECCOMP_IOCTL_NOTIF_SEND == 0xC0182101
    assert trap.SECCOMP_IOCTL_NOTIF_ID_VALID == 0x40082102
    assert trap.SECCOMP_IOCTL_NOTIF_ADDFD == 0x40182103
    assert trap.SECCOMP_IOCTL_NOTIF_SET_FLAGS == 0x40082104


def test_an_unknown_arch_is_refused_with_its_name(monkeypatch):
    monkeypatch.setattr(trap.platform, "machine", lambda: "riscv64")
    with pytest.raises(trap.TrapUnavailable, match="riscv64"):
        trap.current_arch()
    assert "riscv64" in trap._probe()


def test_not_root_is_a_clear_reason(monkeypatch):
    monkeypatch.setattr(trap.os, "geteuid", lambda: 1000)
    assert "needs root" in trap._probe()


def test_every_trapped_syscall_has_one_handler():
    assert set(syscalls.HANDLERS) == set(trap.TRAPPED)
    for method in syscalls.HANDLERS.values():
        assert callable(getattr(syscalls.SyscallFrontEnd, method))


def test_sockaddr_codec_matches_the_kernel_layout():
    raw = encode_sockaddr(SockAddr(AF_INET, "10.0.0.1", 5000))
    assert raw == struct.pack("=H", AF_INET) + struct.pack(">H", 5000) + bytes([10, 0, 0, 1]) + bytes(8)
    assert decode_sockaddr(raw) == SockAddr(AF_INET, "10.0.0.1", 5000)
    six = SockAddr(AF_INET6, "::ffff:10.0.0.2", 80, 7, 3)
    raw6 = encode_sockaddr(six)
    assert len(raw6) == 28 and decode_sockaddr(raw6) == six
    assert decode_sockaddr(raw6[:24]) == six._replace(scope_id=0)          # SIN6_LEN_RFC2133
    assert decode_sockaddr(struct.pack("=H", 0) + bytes(14)).family == 0   # AF_UNSPEC for connect
    assert decode_sockaddr(struct.pack("=H", 1) + b"/x").raw == struct.pack("=H", 1) + b"/x"
    for short in (b"", b"\x02", raw[:15], raw6[:23]):
        with pytest.raises(OSError) as caught:
            decode_sockaddr(short)
        assert caught.value.errno == errno.EINVAL


def test_int_arguments_are_the_low_32_bits_signed():
    assert syscalls._int(0xFFFF_FFFF) == -1
    assert syscalls._int((5 << 32) | 3) == 3
    assert syscalls._int(0x8000_0000) == -(1 << 31)


def test_a_deferred_answers_once_and_tells_if_the_call_was_gone():
    answered = []
    deferred = Deferred()
    deferred._sink = lambda ok, value: answered.append((ok, value)) or True
    assert deferred.resolve(5) is True and answered == [(True, 5)]
    assert deferred.resolve(6) is False and deferred.fail(errno.EINTR) is False
    cancelled = []
    gone = Deferred()
    gone.on_cancel(lambda: cancelled.append(1))
    gone._cancelled()
    assert cancelled == [1] and gone.cancelled and gone.resolve(1) is False


@pytest.mark.parametrize("size", [1, 16, 70000])
def test_memory_is_read_and_written_in_place(size):
    """Our own memory stands in for a program's: the same calls, small and beyond the scratch."""
    require_trap()  # process_vm_readv of ourselves needs what trapping needs
    target = ctypes.create_string_buffer(b"\x01" * size, size)
    other = ctypes.create_string_buffer(8)
    address, pid = ctypes.addressof(target), trap.os.getpid()
    assert trap.read_memory(pid, address, size) == b"\x01" * size
    trap.write_memory_many(pid, [(address, b"\x07" * size), (ctypes.addressof(other), b"abc")])
    assert target.raw == b"\x07" * size and other.raw[:3] == b"abc"
    with pytest.raises(OSError) as caught:
        trap.read_memory(pid, 8, 4)
    assert caught.value.errno == errno.EFAULT
    with pytest.raises(OSError) as caught:
        trap.write_memory(pid, 8, b"x")
    assert caught.value.errno == errno.EFAULT
