import pytest

from nodes.sysctl import KNOBS, Sysctl, SysctlError, check


def test_defaults_are_linux_defaults():
    values = Sysctl()
    assert values["net.ipv4.ip_forward"] == 0
    assert values["net.ipv4.icmp_ratelimit"] == 1000
    assert values["net.ipv4.ipfrag_time"] == 30
    assert values["net.core.netdev_budget"] == 300
    assert len(values) == len(KNOBS)


def test_overrides_accept_bools_and_numeric_strings():
    values = Sysctl({"net.ipv4.ip_forward": True, "net.core.dev_weight": "16"})
    assert values["net.ipv4.ip_forward"] == 1 and values["net.core.dev_weight"] == 16


def test_unknown_name_suggests_the_closest_knob():
    with pytest.raises(SysctlError) as error:
        check("net.ipv4.ip_forwarding", 1)
    assert str(error.value) == "net.ipv4.ip_forwarding: unknown sysctl (did you mean 'net.ipv4.ip_forward'?)"


@pytest.mark.parametrize("value", [2, -1, "yes", 1.5])
def test_bad_values_are_refused(value):
    with pytest.raises(SysctlError):
        check("net.ipv4.ip_forward", value)
