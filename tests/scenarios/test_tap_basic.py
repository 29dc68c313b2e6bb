"""A real Linux namespace on an emulated LAN through a TAP device (issue 15): ping both ways, directly
and through an emulated router; 4000-byte pings fragmented and reassembled by both sides over a
1500/576 MTU path; the TAP made and removed (also when the emulation is killed) or reused and kept.

Root only (CI runs as root): `require_root()` skips locally without it and fails under CI=true.
Each test makes its own namespace `netemu-test-<random>` and deletes it. Addresses: tap_helpers.py.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bus.pcap import read_pcap
from control.emulation import Emulation
from tests.conftest import require_root
from tests.waiting import wait_for

from .helpers import ROOT, private_run_base
from .tap_helpers import (H1_FAR_IP, LINUX_IP, LINUX_MAC, R1_FAR_IP, R1_LAN_IP, TAP_DEVICE, configure_linux, h1_ip,
                          linux_namespace, ns_popen, ns_run, tap_topology)

pytestmark = pytest.mark.timeout(120)


def _auto_mac(ip: str) -> str:
    """The automatic MAC of an emulated interface (docs/topology.md): 02:00 + the address in hex."""
    return "02:00:" + ":".join(f"{int(octet):02x}" for octet in ip.split("."))


def _linux_ping(ns: str, destination: str, *args: str, count: int = 3) -> list[dict]:
    """`ping` in the namespace: one {bytes, ttl} per reply line."""
    result = ns_run(ns, ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "5", *args, destination],
                    capture_output=True)
    replies = []
    for line in result.stdout.splitlines():
        if " bytes from " in line and "ttl=" in line:
            fields = dict(word.split("=", 1) for word in line.split() if "=" in word)
            replies.append({"bytes": int(line.split()[0]), "ttl": int(fields["ttl"])})
    assert len(replies) == count, f"ping {destination} from Linux:\n{result.stdout}{result.stderr}"
    return replies


def _linux_neighbours(ns: str) -> dict[str, str]:
    result = ns_run(ns, ["ip", "-j", "neigh", "show", "dev", TAP_DEVICE], capture_output=True, check=True)
    return {entry["dst"]: entry.get("lladdr") for entry in json.loads(result.stdout or "[]")}


def _snmp(ns: str) -> dict[str, int]:
    """/proc/net/snmp of the namespace as {"Ip.ReasmOKs": n, "Icmp.InCsumErrors": n, ...}."""
    lines = ns_run(ns, ["cat", "/proc/net/snmp"], capture_output=True, check=True).stdout.splitlines()
    counters = {}
    for names, values in zip(lines[::2], lines[1::2]):
        group = names.split(":")[0]
        for name, value in zip(names.split()[1:], values.split()[1:]):
            counters[f"{group}.{name}"] = int(value)
    return counters


def _ipv4_packets(path: Path) -> list[dict]:
    """IPv4 packets of a pcap: src, dst, ttl, total length, more-fragments, fragment offset, protocol."""
    packets = []
    for _, frame in read_pcap(path):
        if frame[12:14] != b"\x08\x00":
            continue
        length, flags = struct.unpack_from("!H2xH", frame, 16)
        packets.append({"src": ".".join(map(str, frame[26:30])), "dst": ".".join(map(str, frame[30:34])),
                        "ttl": frame[22], "length": length, "mf": bool(flags & 0x2000),
                        "offset": (flags & 0x1FFF) * 8, "proto": frame[23], "frame": len(frame)})
    return packets


def _no_bad_checksums(ns: str) -> None:
    counters = _snmp(ns)
    for name in ("Ip.InHdrErrors", "Icmp.InCsumErrors", "Icmp.InErrors"):
        assert counters.get(name, 0) == 0, f"Linux counted {name} = {counters[name]}"


@pytest.mark.parametrize("kind, router", [("switch", False), ("hub", False), ("switch", True)],
                         ids=["lan", "hub", "router"])
def test_ping_both_ways(kind, router, tmp_path):
    """Replies both ways; TTL 64 on the LAN, 63 through the router; ARP entries on both sides."""
    require_root()
    target = h1_ip(router)
    with linux_namespace() as ns, private_run_base():
        with Emulation(tap_topology(tmp_path, ns, router, kind=kind)) as net:
            configure_linux(ns, router)
            # The emulated side first: h1 (or r1, for h1) resolves Linux's address with ARP.
            result = net["h1"].ping(LINUX_IP, count=3, interval=0.2, timeout=5.0)
            assert result.received == 3, result
            assert [reply["ttl"] for reply in result.raw["replies"]] == [63 if router else 64] * 3
            assert [reply["bytes"] for reply in result.raw["replies"]] == [64] * 3

            replies = _linux_ping(ns, target)
            assert [reply["ttl"] for reply in replies] == [63 if router else 64] * 3
            assert [reply["bytes"] for reply in replies] == [64] * 3

            gateway = R1_LAN_IP if router else target
            assert _linux_neighbours(ns).get(gateway) == _auto_mac(gateway)
            facing_linux = net["r1"] if router else net["h1"]
            entries = {entry["ip"]: entry["lladdr"] for entry in facing_linux.arp()}
            assert entries.get(LINUX_IP) == LINUX_MAC
            if router:
                assert {e["ip"]: e["lladdr"] for e in net["h1"].arp()}.get(R1_FAR_IP) == _auto_mac(R1_FAR_IP)
            _no_bad_checksums(ns)


def test_fragmented_pings_both_ways_over_a_576_mtu_link(tmp_path):
    """4000-byte pings through r1 to h1 behind a 576-byte MTU: Linux fragments at 1500 and r1 again at
    576 toward h1; h1 fragments at 576 and Linux reassembles; each side reassembles the other's reply."""
    require_root()
    with linux_namespace() as ns, private_run_base():
        with Emulation(tap_topology(tmp_path, ns, router=True, mtu_far=576)) as net:
            configure_linux(ns, router=True)
            before = _snmp(ns)
            lan0, lan1 = tmp_path / "lan0.pcap", tmp_path / "lan1.pcap"
            net.capture("lan0", lan0)
            net.capture("lan1", lan1)

            replies = _linux_ping(ns, H1_FAR_IP, "-s", "4000", "-M", "dont")
            assert [reply["bytes"] for reply in replies] == [4008] * 3
            assert [reply["ttl"] for reply in replies] == [63] * 3

            result = net["h1"].ping(LINUX_IP, count=3, size=4000, interval=0.2, timeout=5.0)
            assert result.received == 3, result
            assert [reply["bytes"] for reply in result.raw["replies"]] == [4008] * 3

            net.stop_capture("lan0")
            net.stop_capture("lan1")
            after = _snmp(ns)
            # Linux reassembled the 3 replies from h1 and the 3 requests of h1; it fragmented its
            # own 3 requests and 3 replies (4028 bytes each into 3 fragments of at most 1500).
            assert after["Ip.ReasmOKs"] - before["Ip.ReasmOKs"] == 6
            assert after["Ip.FragOKs"] - before["Ip.FragOKs"] == 6
            assert after["Ip.ReasmFails"] == before["Ip.ReasmFails"]
            _no_bad_checksums(ns)

            from_linux = [p for p in _ipv4_packets(lan0) if p["src"] == LINUX_IP and p["proto"] == 1]
            assert len(from_linux) == 18 and max(p["length"] for p in from_linux) == 1500
            assert sorted({p["offset"] for p in from_linux}) == [0, 1480, 2960]
            toward_h1 = [p for p in _ipv4_packets(lan1) if p["src"] == LINUX_IP]
            assert max(p["length"] for p in toward_h1) <= 576 and len(toward_h1) > len(from_linux)
            from_h1 = [p for p in _ipv4_packets(lan0) if p["src"] == H1_FAR_IP]
            assert from_h1 and max(p["length"] for p in from_h1) <= 576 and all(p["ttl"] == 63 for p in from_h1)


def test_a_tap_without_netns_is_made_in_the_emulations_own_namespace_and_removed(tmp_path):
    """Without netns: the TAP appears in the namespace netemu itself runs in, while the emulation
    runs, and goes after. The emulation runs inside a namespace of the test's (`ip netns exec`): a
    test never puts a TAP in the host's own namespace."""
    require_root()
    device = f"nt{secrets.token_hex(4)}"
    path = tmp_path / "own.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: tap-own-{device}
        segments:
          lan0: {{kind: switch, tap: {{device: {device}}}}}
        nodes:
          h1: {{kind: host, interfaces: {{eth0: {{segment: lan0, ip: 10.0.0.10/24}}}}}}
        """))
    with linux_namespace() as ns, private_run_base():
        runner = ns_popen(ns, [sys.executable, "-c", textwrap.dedent(f"""\
            import sys
            from control.emulation import Emulation
            with Emulation({str(path)!r}):
                print("ready", flush=True)
                sys.stdin.read()          # until the test closes our stdin
            print("stopped", flush=True)
            """)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)))
        try:
            assert runner.stdout.readline().strip() == "ready"
            shown = ns_run(ns, ["ip", "-d", "link", "show", "dev", device], capture_output=True)
            assert shown.returncode == 0 and "tun type tap" in shown.stdout and "persist off" in shown.stdout
            assert ",UP" in shown.stdout.split(">")[0]
            runner.stdin.close()
            assert runner.stdout.readline().strip() == "stopped"
            runner.wait(timeout=30)
            assert ns_run(ns, ["ip", "link", "show", "dev", device], capture_output=True).returncode != 0
        finally:
            if runner.poll() is None:
                runner.kill()
                runner.wait(timeout=10)
            runner.stdout.close()


def test_an_existing_tap_is_reused_and_left_in_place(tmp_path):
    require_root()
    with linux_namespace() as ns, private_run_base():
        subprocess.run(["ip", "-n", ns, "tuntap", "add", "dev", TAP_DEVICE, "mode", "tap"], check=True,
                       capture_output=True, timeout=10)
        with Emulation(tap_topology(tmp_path, ns, router=False)):
            configure_linux(ns, router=False)
            _linux_ping(ns, h1_ip(False), count=2)
        shown = ns_run(ns, ["ip", "-d", "link", "show", "dev", TAP_DEVICE], capture_output=True)
        assert shown.returncode == 0 and "persist on" in shown.stdout


def test_a_tap_in_use_by_another_program_is_a_clear_start_error(tmp_path):
    require_root()
    with linux_namespace() as ns, private_run_base():
        holder = ns_popen(ns, [sys.executable, "-c", textwrap.dedent(f"""\
            import fcntl, os, struct, sys
            fd = os.open("/dev/net/tun", os.O_RDWR)
            fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", b"{TAP_DEVICE}", 0x1002).ljust(40, b"\\0"))
            print("ready", flush=True)
            sys.stdin.read()
            """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "ready"
            with pytest.raises(Exception) as error:
                Emulation(tap_topology(tmp_path, ns, router=False)).start()
            assert f"TAP {TAP_DEVICE} in network namespace {ns!r} is already in use by another program" in str(error.value)
        finally:
            holder.stdin.close()
            holder.wait(timeout=10)


def test_the_tap_goes_when_the_emulation_is_killed(tmp_path):
    """SIGKILL of the process running the emulation: its processes die with it, and so does the TAP."""
    require_root()
    with linux_namespace() as ns, private_run_base():
        topology = tap_topology(tmp_path, ns, router=False)
        runner = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""\
            import signal
            from control.emulation import Emulation
            net = Emulation({str(topology)!r}).start()
            print("ready", flush=True)
            signal.pause()                # until the test kills us
            """)], cwd=ROOT, stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        try:
            assert runner.stdout.readline().strip() == "ready"
            assert ns_run(ns, ["ip", "link", "show", "dev", TAP_DEVICE], capture_output=True).returncode == 0
            runner.send_signal(signal.SIGKILL)
            runner.wait(timeout=10)
            wait_for(lambda: ns_run(ns, ["ip", "link", "show", "dev", TAP_DEVICE], capture_output=True).returncode != 0,
                     timeout=15.0, interval=0.05)
        finally:
            if runner.poll() is None:
                runner.kill()
                runner.wait(timeout=10)
            runner.stdout.close()


def test_the_tap_port_is_shaped_like_any_port(tmp_path):
    """`net.link("lan0", "ntap0")` is the TAP's port: 25 ms on it is 25 ms each way between Linux and lan0."""
    require_root()
    with linux_namespace() as ns, private_run_base():
        with Emulation(tap_topology(tmp_path, ns, router=False)) as net:
            configure_linux(ns, router=False)
            handle = net.link("lan0", TAP_DEVICE)
            assert (handle.device, handle.port) == ("lan0", f"tap@{TAP_DEVICE}")
            assert (f"tap@{TAP_DEVICE}", "lan0", "tap") in net.links()
            handle.set(delay="25ms")
            result = ns_run(ns, ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "5", h1_ip(False)], capture_output=True)
            rtts = [float(word.split("=")[1]) for word in result.stdout.split() if word.startswith("time=")]
            assert len(rtts) == 2 and all(50.0 <= rtt < 2000.0 for rtt in rtts), result.stdout + result.stderr
            reply = net["h1"].ping(LINUX_IP, count=1, timeout=5.0)
            assert reply.received == 1 and reply.rtts[0] >= 50.0, reply


def test_a_name_taken_by_another_kind_of_link_is_a_clear_start_error(tmp_path):
    require_root()
    with linux_namespace() as ns, private_run_base():
        subprocess.run(["ip", "-n", ns, "link", "add", TAP_DEVICE, "type", "veth", "peer", "name", "ntap0-peer"],
                       check=True, capture_output=True, timeout=10)
        with pytest.raises(Exception) as error:
            Emulation(tap_topology(tmp_path, ns, router=False)).start()
        assert f"{TAP_DEVICE} exists in network namespace {ns!r} and is not a TAP device" in str(error.value)


def test_netns_as_an_absolute_path(tmp_path):
    """`netns: /run/netns/NAME` (any namespace file, e.g. /proc/PID/ns/net of a container's process)."""
    require_root()
    with linux_namespace() as ns, private_run_base():
        path = tap_topology(tmp_path, ns, router=False)
        path.write_text(path.read_text().replace(f'"netns": "{ns}"', f'"netns": "/run/netns/{ns}"'))
        with Emulation(path) as net:
            configure_linux(ns, router=False)
            assert net["h1"].ping(LINUX_IP, count=1, timeout=5.0).received == 1
