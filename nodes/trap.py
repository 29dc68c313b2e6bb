"""Seccomp user notification: every kernel layout, number and call of the syscall trap, in one place.

Before changing this file, read seccomp_unotify(2), seccomp(2), pidfd_getfd(2),
process_vm_readv(2) and issue 12's design section. No socket semantics here:
`nodes/syscalls.py` decides what a trapped call means; this module only knows
how a call is trapped, read, answered and how memory and fds of the trapped
task are reached.

Three modules, each importing only the ones below it; `trap.NAME` names every
one of their names (import this module, not the two below):

    trap           whether trapping is possible here, installing the filter, `spawn_trapped`
    trap_listener  the listener's calls (receive, answer, inject an fd, ID_VALID) and the
                   trapped task's fds (pidfd) and memory (process_vm_readv/writev)
    trap_abi       architectures and syscall numbers, uapi constants, struct layouts,
                   ioctl numbers, libc, the BPF filter builder

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
import os
import platform
import select
import struct
import threading
from typing import Callable, Iterable, Mapping, Sequence

from .trap_abi import (
    ARCHES, AUDIT_ARCH_AARCH64, AUDIT_ARCH_X86_64, BPF_JEQ_K, BPF_JGE_K, BPF_JGT_K, BPF_LD_W_ABS,
    BPF_RET_K, PIDFD_THREAD, PR_SET_NO_NEW_PRIVS, SECCOMP_ADDFD_FLAG_SEND, SECCOMP_ADDFD_FLAG_SETFD,
    SECCOMP_FILTER_FLAG_NEW_LISTENER, SECCOMP_GET_NOTIF_SIZES, SECCOMP_IOCTL_NOTIF_ADDFD,
    SECCOMP_IOCTL_NOTIF_ID_VALID, SECCOMP_IOCTL_NOTIF_RECV, SECCOMP_IOCTL_NOTIF_SEND,
    SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_RET_ALLOW, SECCOMP_RET_KILL_PROCESS, SECCOMP_RET_USER_NOTIF,
    SECCOMP_SET_MODE_FILTER, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, SECCOMP_USER_NOTIF_FLAG_CONTINUE,
    TRAPPED, X32_SYSCALL_BIT, Arch, Iovec, SeccompData, SeccompNotif, SeccompNotifAddfd,
    SeccompNotifResp, SeccompNotifSizes, SockFilter, SockFprog, TrapUnavailable, _libc, _syscall,
    build_filter, current_arch,
)
from .trap_listener import (
    Notification, fd_of_task, id_valid, inject_fd, listener_state, pidfd_getfd, pidfd_open, read_memory,
    recv_notification, respond, set_sync_wakeup, write_memory, write_memory_many,
)

__all__ = [   # every public name of the trap, wherever it is defined (see the module docstring)
    # trap_abi
    "ARCHES", "AUDIT_ARCH_AARCH64", "AUDIT_ARCH_X86_64", "BPF_JEQ_K", "BPF_JGE_K", "BPF_JGT_K",
    "BPF_LD_W_ABS", "BPF_RET_K", "PIDFD_THREAD", "PR_SET_NO_NEW_PRIVS", "SECCOMP_ADDFD_FLAG_SEND",
    "SECCOMP_ADDFD_FLAG_SETFD", "SECCOMP_FILTER_FLAG_NEW_LISTENER", "SECCOMP_GET_NOTIF_SIZES",
    "SECCOMP_IOCTL_NOTIF_ADDFD", "SECCOMP_IOCTL_NOTIF_ID_VALID", "SECCOMP_IOCTL_NOTIF_RECV",
    "SECCOMP_IOCTL_NOTIF_SEND", "SECCOMP_IOCTL_NOTIF_SET_FLAGS", "SECCOMP_RET_ALLOW",
    "SECCOMP_RET_KILL_PROCESS", "SECCOMP_RET_USER_NOTIF", "SECCOMP_SET_MODE_FILTER",
    "SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP", "SECCOMP_USER_NOTIF_FLAG_CONTINUE", "TRAPPED", "X32_SYSCALL_BIT",
    "Arch", "Iovec", "SeccompData", "SeccompNotif", "SeccompNotifAddfd", "SeccompNotifResp",
    "SeccompNotifSizes", "SockFilter", "SockFprog", "TrapUnavailable", "build_filter", "current_arch",
    # trap_listener
    "Notification", "fd_of_task", "id_valid", "inject_fd", "listener_state", "pidfd_getfd", "pidfd_open",
    "read_memory", "recv_notification", "respond", "set_sync_wakeup", "write_memory", "write_memory_many",
    # here
    "HANDOFF_TIMEOUT", "ensure_available", "install_filter", "spawn_trapped", "unavailable_reason",
]


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
