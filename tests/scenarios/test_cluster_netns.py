"""A closer picture of separate machines, as root: three network namespaces joined by a Linux
bridge, each running `ray start` with its own address and token authentication
(tests/scenarios/ray_netns.py), and netemu's controller inside the first one.

* topologies/racks.yaml runs across the three, pings cross every machine boundary;
* a capture on the bridge, of netemu's own tcp:// ports, holds no plaintext frame: a marker sent
  across machines and the emulated MAC addresses never appear in it, and they do with
  `encrypt=False` (so the check can fail);
* a controller with a wrong token is refused, quickly and clearly, and leaves nothing behind.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import require_root, require_tool

from .helpers import ROOT, topology
from .ray_netns import ray_machines

pytestmark = [pytest.mark.timeout(300), pytest.mark.integration]

MARKER = b"NETEMU-PLAINTEXT-MARKER-0123456789"
R1_CORE_MAC = bytes.fromhex("02000a000001")  # r1's eth1: in every plaintext frame that crosses the core trunk

DRIVER = textwrap.dedent("""
    import json, socket, sys
    sys.path.insert(0, {root!r})
    from control.emulation import Emulation

    address, encrypt, run_base = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
    import os
    os.environ["NETEMU_RUN_DIR"] = run_base
    with Emulation({topology!r}, name="nsracks", cluster=address, encrypt=encrypt) as net:
        ports = sorted({{int(p.config[key].rsplit(":", 1)[1]) for p in net.plan.processes
                        for key in ("control", "data_tcp") if p.config.get(key)}})
        print(json.dumps({{"ports": ports, "ips": [m.ip for m in net.plan.machines]}}), flush=True)
        sys.stdin.readline()  # the capture runs
        failed = [pair for pair, r in net.pingall(count=1, timeout=2.0, nodes=["a1", "a2", "b1", "c1", "c2"]).items()
                  if isinstance(r, Exception) or r.received != 1]
        sock = net["a1"].socket(socket.AF_INET, socket.SOCK_DGRAM)  # a1 is on this machine (m0)
        for target in ("10.2.0.11", "10.3.0.11"):  # b1 across the core trunk, c1 across wan23 too
            for _ in range(5):
                sock.sendto({marker!r}, (target, 9))
        sock.close()
        assert net["a1"].ping("c1", count=2, interval=0.2).received == 2
        print(json.dumps({{"failed": failed}}), flush=True)
""")


@pytest.fixture(scope="module")
def machines():
    require_root()
    require_tool("tshark")
    with ray_machines(3) as running:
        yield running


def run_and_capture(machines, tmp_path: Path, encrypt: bool) -> tuple[dict, bytes]:
    """The driver in machine 0, a capture of netemu's ports on the bridge meanwhile: (report, pcap)."""
    script = DRIVER.format(root=str(ROOT), topology=str(topology("racks")), marker=MARKER)
    run_base = tempfile.mkdtemp(prefix="ne-ns-", dir="/tmp")
    log = open(tmp_path / f"driver-{int(encrypt)}.log", "w+")  # Ray's chatter must not fill a pipe
    driver = machines.popen(0, [sys.executable, "-c", script, machines.head_address, "1" if encrypt else "0",
                                run_base], stdin=subprocess.PIPE, stderr=log)
    capture = None
    try:
        first = json.loads(driver.stdout.readline() or "{}")
        assert first.get("ports"), driver.communicate(timeout=30)
        assert sorted(first["ips"]) == sorted(machines.addresses)
        pcap = tmp_path / f"bridge-{int(encrypt)}.pcap"
        capture = subprocess.Popen(["ip", "netns", "exec", machines.bridge_ns, "tshark", "-q", "-i", machines.bridge,
                                    "-w", str(pcap)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        said = ""  # tshark says "Capturing on 'nbr0'" on stderr once the interface is open
        while "Capturing on" not in said and capture.poll() is None:
            said = capture.stderr.readline()
        assert "Capturing on" in said, capture.communicate()
        driver.stdin.write("go\n")
        driver.stdin.flush()
        report = json.loads(driver.stdout.readline() or "{}")
        out, _ = driver.communicate(timeout=120)
        log.seek(0)
        assert driver.returncode == 0, out + log.read()[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
        if capture is not None and capture.poll() is None:
            capture.send_signal(signal.SIGINT)
            capture.communicate(timeout=30)
        shutil.rmtree(run_base, ignore_errors=True)
        log.close()
    # Only netemu's own links: Ray's traffic (plaintext gRPC, the token among it) is Ray's business.
    ours = tmp_path / f"netemu-{int(encrypt)}.pcap"
    ports = ",".join(str(port) for port in first["ports"])
    subprocess.run(["tshark", "-r", str(pcap), "-Y", f"tcp.port in {{{ports}}}", "-w", str(ours)], check=True,
                   capture_output=True, timeout=120)
    return report, ours.read_bytes()


def test_racks_across_namespaces_with_no_plaintext_on_the_bridge(machines, tmp_path):
    report, captured = run_and_capture(machines, tmp_path, encrypt=True)
    assert report["failed"] == []
    assert len(captured) > 10_000, "the capture saw none of netemu's traffic"
    assert MARKER not in captured and R1_CORE_MAC not in captured


def test_the_same_check_sees_plaintext_without_encryption(machines, tmp_path):
    report, captured = run_and_capture(machines, tmp_path, encrypt=False)
    assert report["failed"] == []
    assert MARKER in captured and R1_CORE_MAC in captured


def test_a_controller_with_a_wrong_token_is_refused(machines):
    began = time.monotonic()
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from control.cluster import ClusterError
        from control.emulation import Emulation
        try:
            Emulation({str(topology("single_lan"))!r}, name="wrong", cluster={machines.head_address!r}).start()
            print("STARTED")
        except ClusterError as error:
            print("REFUSED:", error)
    """)
    result = machines.python(0, code, token="0" * 64, timeout=120)
    took = time.monotonic() - began
    assert "REFUSED:" in result.stdout and "refused our token" in result.stdout, result.stdout + result.stderr[-2000:]
    assert took < 30, took
    listed = machines.python(1, "import ray; ray.init(address=%r); "
                                "print([a['name'] for a in ray.util.list_named_actors(all_namespaces=True)])"
                             % machines.head_address)
    assert listed.returncode == 0 and "netemu.wrong" not in listed.stdout, listed.stdout + listed.stderr[-2000:]
