"""bus.ether (the bus's view of an Ethernet header) and bus.port (a device port's length checks and counters).

bus/ether.py must agree with the full codec, nodes/wire/ethernet.py, which
this test (not the bus) may import as an oracle.
"""
from __future__ import annotations

import pytest

from bus import ether
from bus.device import PORT_COUNTERS, Port, derive_seed  # still importable from bus.device
from bus.port import Port as PortFromModule
from bus.shaping import LinkParams
from bus.testing import make_frame
from nodes.wire import ethernet as codec


@pytest.mark.parametrize("vlan", [None, 5])
def test_ether_layout_reads_what_the_codec_parses(vlan):
    frame = make_frame("02:00:00:00:00:0b", "02:00:00:00:00:0a", b"payload", ethertype=0x0800, vlan=vlan)
    header = codec.EthernetHeader.parse(frame)
    assert frame[ether.SRC] == bytes.fromhex(str(header.src).replace(":", ""))
    assert frame[ether.DST] == bytes.fromhex(str(header.dst).replace(":", ""))
    assert frame[ether.ADDRESSES] == frame[ether.DST] + frame[ether.SRC]
    assert ether.is_vlan_tagged(frame) == (header.vlan is not None)
    assert ether.HEADER_LENGTH == codec.HEADER_LENGTH
    assert ether.HEADER_LENGTH + ether.VLAN_TAG_LENGTH == codec.VLAN_HEADER_LENGTH
    assert int.from_bytes(ether.TPID_8021Q, "big") == codec.ETH_P_8021Q


def test_bus_device_reexports_the_port():
    assert Port is PortFromModule
    assert "rx_dropped_mtu" in PORT_COUNTERS
    assert derive_seed(1, "h1:eth0", "ingress") == derive_seed(1, "h1:eth0", "ingress")
    assert derive_seed(1, "h1:eth0", "ingress") != derive_seed(1, "h1:eth0", "egress")


def _port(mtu: int = 100) -> Port:
    return Port("h1:eth0", LinkParams.from_canonical({"mtu": mtu}), seed=1)


def test_ingress_checks_count_runts_and_too_long_frames_and_let_a_tag_add_four_bytes():
    port = _port(mtu=100)
    fits = make_frame(1, 2, size=114)
    runt = fits[:13]
    too_long = make_frame(1, 2, size=115)
    tagged = make_frame(1, 2, vlan=7, size=118)
    tagged_too_long = make_frame(1, 2, vlan=7, size=119)
    assert port.check_ingress([fits, runt, too_long, tagged, tagged_too_long]) == [fits, tagged]
    assert port.rx_dropped_malformed == 1 and port.rx_dropped_mtu == 2
    stats = port.stats()
    assert stats["dropped_malformed"] == 1 and stats["dropped_mtu"] == 2 and stats["rx_dropped"] == 3


def test_egress_fit_counts_what_a_smaller_mtu_drops():
    port = _port(mtu=68)
    small, large, tagged = make_frame(1, 2, size=82), make_frame(1, 2, size=83), make_frame(1, 2, vlan=1, size=86)
    assert port.fit_egress([small, large, tagged]) == [small, tagged]
    assert port.tx_dropped_mtu == 1 and port.stats()["tx_dropped"] == 1


def test_set_params_moves_the_length_limits():
    port = _port(mtu=100)
    port.set_params(LinkParams.from_canonical({"mtu": 1500}))
    assert (port.max_untagged, port.max_tagged) == (1514, 1518)
