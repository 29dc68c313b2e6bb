"""A segment's bridge to a Linux TAP device: real Linux hosts on an emulated LAN.

Before changing this file, read docs/tap.md (what the user sees), bus/device.py
(the data path this port joins) and Linux's Documentation/networking/tuntap.rst.

A segment with `tap: {device: NAME, netns: NS}` gets one more port, named
``tap@NAME``, inside its own device process (a switch or hub): frames read from
the TAP go through the ingress path as if a NIC had sent them; frames toward
it are written to the TAP fd, one write() per frame (IFF_NO_PI: a write is one
Ethernet frame, no header). Offloads are off (TUNSETOFFLOAD 0, no
IFF_VNET_HDR), so Linux hands us frames with complete checksums and expects
the same, which our stack writes anyway.

The TAP is opened inside the namespace: /dev/net/tun binds the device to the
network namespace of the process that opened it (tun_chr_open: the file's
socket takes current's net namespace), so the calling thread setns()es into
/run/netns/NS, opens, TUNSETIFF, brings the link up, and setns()es back.
A TAP that did not exist is created non-persistent: the kernel deletes it when
its last fd closes, so teardown needs no code and survives SIGKILL of the
whole emulation. A TAP that already existed (persistent, made by
`ip tuntap add`) is attached to and left in place.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import socket
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .transport import FrameBatcher, pack_frames, unpack_frames

if TYPE_CHECKING:
    from .device import Device
    from .port import Port

log = logging.getLogger("netemu.bus")

__all__ = ["TAP_PORT_PREFIX", "TapError", "TapLink", "netns_path", "open_tap", "preflight_problems",
           "privilege_problem", "tap_port_name"]

# linux/if_tun.h
TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
# linux/sockios.h, linux/if.h
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFMTU = 0x8922
SIOCGIFINDEX = 0x8933
IFF_UP = 0x1
CLONE_NEWNET = 0x40000000
CAP_NET_ADMIN = 12
TUN_PATH = "/dev/net/tun"
NETNS_DIR = "/run/netns"
TAP_PORT_PREFIX = "tap@"
READ_BUDGET = 256          # frames read per readable event (like the device's RECEIVE_BUDGET)
READ_SIZE = 65536


class TapError(OSError):
    """The TAP cannot be opened as asked (the message says why and what to do)."""


def tap_port_name(device: str) -> str:
    """The device port that bridges TAP `device` (``tap@NAME``: '@' is in no node name)."""
    return f"{TAP_PORT_PREFIX}{device}"


def netns_path(netns: str) -> str:
    """The file of a network namespace: an absolute path as is, else /run/netns/NAME (`ip netns`)."""
    return netns if netns.startswith("/") else os.path.join(NETNS_DIR, netns)


def privilege_problem() -> str | None:
    """Why this process cannot make TAP devices (no CAP_NET_ADMIN, no /dev/net/tun), or None."""
    effective = 0
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("CapEff:"):
                    effective = int(line.split()[1], 16)
    except OSError:
        effective = 0 if os.geteuid() else 1 << CAP_NET_ADMIN
    if not effective & (1 << CAP_NET_ADMIN):
        return "a TAP device needs root (CAP_NET_ADMIN): run netemu as root (sudo)"
    if not os.path.exists(TUN_PATH):
        return f"{TUN_PATH} does not exist: load the tun module (modprobe tun)"
    return None


def preflight_problems(taps: list[tuple[str, str, str | None]]) -> list[str]:
    """What stops `(segment, device, netns)` TAPs from being made now: privileges, missing namespaces."""
    if not taps:
        return []
    problems = []
    privilege = privilege_problem()
    if privilege is not None:
        problems.append(privilege)
    for segment, device, netns in taps:
        if netns is not None and not os.path.exists(netns_path(netns)):
            problems.append(f"segment {segment}: tap {device}: network namespace {netns!r} does not exist "
                            f"({netns_path(netns)} is missing; create it first: ip netns add {netns})")
    return problems


# ------------------------------------------------------------------ opening

_libc: Any = None


def _setns(fd: int) -> None:
    global _libc
    if hasattr(os, "setns"):  # Python 3.12
        os.setns(fd, CLONE_NEWNET)
        return
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _ifreq(name: str, fmt: str = "", *values: Any) -> bytes:
    """A struct ifreq (40 bytes): the name, then the union's leading field."""
    return struct.pack("16s" + fmt, name.encode(), *values).ljust(40, b"\0")


def _in_netns(netns: str | None, action: Callable[[], Any]) -> Any:
    """Run `action` with this thread in network namespace `netns` (None: where it is), then come back."""
    if netns is None:
        return action()
    try:
        target = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TapError(errno.ENOENT, f"network namespace {netns!r} does not exist ({netns_path(netns)}): "
                                     f"create it first (ip netns add {netns})") from None
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            _setns(target)
        except OSError as exc:
            raise TapError(exc.errno, f"cannot enter network namespace {netns!r}: {exc.strerror}") from None
        try:
            return action()
        finally:
            _setns(own)  # must not fail: we opened our own namespace's file
    finally:
        os.close(target)
        os.close(own)


@dataclass(slots=True)
class OpenedTap:
    """An open TAP: its non-blocking fd (-1 once closed), name, namespace, and whether we made it."""

    fd: int
    device: str
    netns: str | None
    created: bool


def open_tap(device: str, netns: str | None = None, mtu: int | None = None) -> OpenedTap:
    """Open (creating it if needed) TAP `device` in `netns`, non-blocking, offloads off, link up.

    A created TAP gets `mtu` (when given) and is not persistent: it goes when the fd closes."""
    where = f"in network namespace {netns!r}" if netns else "in the host's network namespace"

    def action() -> OpenedTap:
        control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            try:
                fcntl.ioctl(control, SIOCGIFINDEX, _ifreq(device))
                existed = True
            except OSError:
                existed = False
            try:
                fd = os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
            except OSError as exc:
                raise TapError(exc.errno, f"cannot open {TUN_PATH}: {exc.strerror}") from None
            try:
                try:
                    fcntl.ioctl(fd, TUNSETIFF, _ifreq(device, "H", IFF_TAP | IFF_NO_PI))
                except OSError as exc:
                    raise TapError(exc.errno, _setiff_error(device, where, exc)) from None
                fcntl.ioctl(fd, TUNSETOFFLOAD, 0)
                if mtu is not None and not existed:
                    fcntl.ioctl(control, SIOCSIFMTU, _ifreq(device, "i", mtu))
                flags = struct.unpack_from("H", fcntl.ioctl(control, SIOCGIFFLAGS, _ifreq(device)), 16)[0]
                if not flags & IFF_UP:
                    fcntl.ioctl(control, SIOCSIFFLAGS, _ifreq(device, "H", flags | IFF_UP))
            except BaseException:
                os.close(fd)
                raise
            return OpenedTap(fd, device, netns, not existed)
        finally:
            control.close()

    tap = _in_netns(netns, action)
    log.info("%s TAP %s %s", "created" if tap.created else "attached to existing", device, where)
    return tap


def _setiff_error(device: str, where: str, exc: OSError) -> str:
    if exc.errno == errno.EINVAL:
        return f"{device} exists {where} and is not a TAP device (a TUN, veth or other link): choose another name"
    if exc.errno == errno.EBUSY:
        return f"TAP {device} {where} is already in use by another program"
    if exc.errno == errno.EPERM:
        return f"not allowed to attach to TAP {device} {where} (it belongs to another user; run as root)"
    return f"cannot open TAP {device} {where}: {exc.strerror}"


# ------------------------------------------------------------ the device port

class TapLink:
    """The TAP end of one device port: reads frames into the device, writes the port's output."""

    __slots__ = ("tap", "device", "port", "write_errors", "read_errors")

    def __init__(self, tap: OpenedTap, device: "Device", port: "Port") -> None:
        self.tap = tap
        self.device = device
        self.port = port
        self.write_errors = 0
        self.read_errors = 0

    def send(self, message: bytes) -> bool:
        """FrameBatcher's send: one write() per frame of the packed message. False when a write
        failed (FrameBatcher then counts the whole message as dropped: only the first pass after
        the Linux side went down can overcount)."""
        write, fd = os.write, self.tap.fd
        ok = True
        for frame in unpack_frames(message):
            try:
                write(fd, frame)
            except OSError as exc:
                # EIO: the Linux side is down (tun_get_user); EAGAIN/ENOBUFS: no room.
                self.write_errors += 1
                self.port.send_failure = "queue"
                if exc.errno not in (errno.EIO, errno.EAGAIN, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("%s: write to TAP %s: %s", self.device.name, self.tap.device, exc)
                ok = False
        return ok

    def on_readable(self) -> None:
        """Drain the TAP (up to READ_BUDGET frames) into the device as one batch from this port."""
        read, fd = os.read, self.tap.fd
        frames = []
        for _ in range(READ_BUDGET):
            try:
                frame = read(fd, READ_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                # EBADFD: the TAP is gone (tun_chr_read on a detached file): stop reading it.
                self.read_errors += 1
                log.warning("%s: TAP %s: %s; no longer reading it", self.device.name, self.tap.device, exc)
                self.device.loop.remove_reader(fd)
                break
            if not frame:  # end of file: not a TAP's behaviour, but never spin on it
                log.warning("%s: TAP %s: end of file; no longer reading it", self.device.name, self.tap.device)
                self.device.loop.remove_reader(fd)
                break
            frames.append(frame)
        if frames:
            self.device._receive(self.port, pack_frames(frames), self.device.clock())

    def describe(self) -> dict[str, Any]:
        """For the device's `status`: which TAP, where, whether we made it, I/O errors."""
        return {"device": self.tap.device, "netns": self.tap.netns, "created": self.tap.created,
                "port": self.port.name, "read_errors": self.read_errors, "write_errors": self.write_errors}

    def close(self) -> None:
        if self.tap.fd >= 0:
            os.close(self.tap.fd)  # a TAP we created is deleted by the kernel here
            self.tap.fd = -1


def attach_tap(device: "Device", spec: dict[str, Any],
               opener: Callable[[str, str | None, int | None], OpenedTap] = open_tap) -> TapLink:
    """Open the TAP of `spec` ({"device", "netns", "port"}) and make it a port of `device`.

    `opener(device, netns, mtu)` is `open_tap`; tests give a SOCK_SEQPACKET socketpair instead
    (a read is one message, a write one message: the TAP's semantics)."""
    name = spec.get("port") or tap_port_name(spec["device"])
    port = device.ports.get(name.encode())
    if port is None:
        port = device._create_port(name, device.defaults)
    if port is None:
        raise TapError(errno.ENOSPC, f"{device.name}: no room for the TAP's port {name}")
    tap = opener(spec["device"], spec.get("netns"), port.mtu)
    link = TapLink(tap, device, port)
    port.out = FrameBatcher(link.send)
    device.loop.add_reader(tap.fd, link.on_readable)
    device._attach(port)
    return link
