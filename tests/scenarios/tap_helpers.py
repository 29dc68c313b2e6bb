"""Helpers of the TAP interop tests (issue 15): a throw-away Linux network namespace, commands in
it, and the topology that bridges an emulated LAN to a TAP device inside it.

The addresses (`tap_topology` writes them; `configure_linux` sets the Linux side):

    router=False:   Linux ns  ntap0 10.0.0.1/24 ---- lan0 (switch) ---- h1 eth0 10.0.0.10/24

    router=True:    Linux ns  ntap0 10.0.0.1/24 ---- lan0 (switch) ---- r1 eth0 10.0.0.254/24
                                                                          r1 eth1 10.0.1.254/24 (mtu_far)
                                                     lan1 (switch) ---- h1 eth0 10.0.1.10/24  (mtu_far)
                    Linux route 10.0.1.0/24 via 10.0.0.254; h1 default via 10.0.1.254

The TAP is `ntap0` (TAP_DEVICE) in the namespace, MAC 02:4c:00:00:00:01 (LINUX_MAC), MTU 1500.
netemu creates it when the emulation starts and removes it when it stops, so the Linux side is
configured after `Emulation` has started (`configure_linux`). Every test makes its own namespace
(`linux_namespace()`), named `netemu-test-<random>`, deleted in `finally`.
"""
from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
from pathlib import Path
from typing import Any, Iterator, Sequence


TAP_DEVICE = "ntap0"
LINUX_IP = "10.0.0.1"
LINUX_MAC = "02:4c:00:00:00:01"
H1_LAN_IP = "10.0.0.10"      # h1 without a router
R1_LAN_IP = "10.0.0.254"     # r1 on lan0 (the Linux side's gateway to 10.0.1.0/24)
R1_FAR_IP = "10.0.1.254"     # r1 on lan1
H1_FAR_IP = "10.0.1.10"      # h1 behind r1


def h1_ip(router: bool) -> str:
    """h1's address in the topology `tap_topology(..., router=router)`."""
    return H1_FAR_IP if router else H1_LAN_IP


@contextlib.contextmanager
def linux_namespace() -> Iterator[str]:
    """A new network namespace `netemu-test-<random>` with `lo` up; deleted afterwards."""
    name = f"netemu-test-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=10)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True,
                       capture_output=True, timeout=10)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def ns_run(ns: str, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess:
    """`subprocess.run(["ip", "netns", "exec", ns, *argv], **kw)` (text output and a 60 s timeout
    unless given)."""
    kw.setdefault("timeout", 60)
    kw.setdefault("text", True)
    return subprocess.run(["ip", "netns", "exec", ns, *argv], **kw)


def ns_popen(ns: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
    """`subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kw)`: a server in the namespace."""
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kw)


def configure_linux(ns: str, router: bool, device: str = TAP_DEVICE) -> None:
    """The Linux side of `tap_topology`: MAC, 10.0.0.1/24 and up on the TAP, and with a router the
    route to 10.0.1.0/24 via r1. Call it once the emulation runs (netemu made the TAP)."""
    commands = [["link", "set", device, "address", LINUX_MAC],
                ["addr", "add", f"{LINUX_IP}/24", "dev", device],
                ["link", "set", device, "up"]]
    if router:
        commands.append(["route", "add", "10.0.1.0/24", "via", R1_LAN_IP])
    for command in commands:
        subprocess.run(["ip", "-n", ns, *command], check=True, capture_output=True, timeout=10)


def tap_topology(tmp_path: Path, ns: str, router: bool, mtu_far: int = 1500, *,
                 h1_link: dict[str, Any] | None = None, capture: str | None = None,
                 device: str = TAP_DEVICE, kind: str = "switch") -> Path:
    """Write the topology of this module's docstring to `tmp_path/tap.yaml` and return its path.

    `mtu_far`: the MTU of r1 eth1 and h1 eth0 (router=True only; 576 for the fragmentation tests).
    `h1_link`: extra link parameters on h1's interface, e.g. {"loss": "2%"} (both directions).
    `capture`: a pcap path for lan0 (the TAP's segment: exactly what Linux sends and receives).
    `kind`: lan0's kind, switch or hub."""
    lan0: dict[str, Any] = {"kind": kind, "tap": {"device": device, "netns": ns}}
    if capture is not None:
        lan0["capture"] = str(capture)
    h1_iface: dict[str, Any] = dict(h1_link or {})
    segments: dict[str, Any] = {"lan0": lan0}
    nodes: dict[str, Any] = {}
    if router:
        segments["lan1"] = {"kind": "switch"}
        nodes["r1"] = {"kind": "router", "interfaces": {
            "eth0": {"segment": "lan0", "ip": f"{R1_LAN_IP}/24"},
            "eth1": {"segment": "lan1", "ip": f"{R1_FAR_IP}/24", "mtu": mtu_far}}}
        h1_iface.update({"segment": "lan1", "ip": f"{H1_FAR_IP}/24", "mtu": mtu_far})
        nodes["h1"] = {"kind": "host", "interfaces": {"eth0": h1_iface},
                       "routes": [f"default via {R1_FAR_IP}"]}
    else:
        h1_iface.update({"segment": "lan0", "ip": f"{H1_LAN_IP}/24"})
        nodes["h1"] = {"kind": "host", "interfaces": {"eth0": h1_iface}}
    # JSON is YAML: no quoting surprises (MACs, numbers).
    document = {"name": f"tap-{ns.rsplit('-', 1)[-1]}", "segments": segments, "nodes": nodes}
    path = Path(tmp_path) / "tap.yaml"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
