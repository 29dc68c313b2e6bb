"""The corpus of broken topologies: each file paired with the exact problems `netemu check` prints.

`broken/NAME.yaml` is a topology with mistakes; `broken/NAME.expected` holds
the exact text of the resulting `TopologyError` (file names as the bare file
name). To add a case, write both files; the test fails until they agree.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from control.topology import TopologyError, load_topology

BROKEN = Path(__file__).parent / "broken"
CASES = sorted(BROKEN.glob("*.yaml"))

# Every problem class of the validator and a corpus file showing it.
PROBLEM_CLASSES = {
    "YAML syntax error": ("01_yaml_syntax", "YAML syntax"),
    "duplicate node name (YAML duplicate key)": ("02_duplicate_node", "duplicate key"),
    "duplicate segment name": ("03_duplicate_segment", "duplicate key"),
    "unknown key with did-you-mean": ("04_unknown_keys", "unknown key (did you mean"),
    "missing required field": ("05_missing_required", "missing (required)"),
    "wrong type": ("06_wrong_types", "expected a mapping, got a list"),
    "bad CIDR": ("07_bad_cidr", "needs a prefix length"),
    "network address": ("08_network_broadcast", "is the network address"),
    "broadcast address": ("08_network_broadcast", "is the broadcast address"),
    "duplicate IP": ("09_duplicate_ip", "duplicate address"),
    "duplicate explicit MAC": ("10_duplicate_mac", "duplicate MAC"),
    "explicit MAC colliding with an automatic one": ("11_mac_collides_with_auto", "is the automatic MAC"),
    "dangling segment reference": ("12_dangling_segment", "no segment named"),
    "p2p link with one interface": ("13_p2p_one_end", "named by no other interface"),
    "p2p link with three interfaces": ("14_p2p_three_ends", "already joins"),
    "gateway not on a connected subnet": ("15_gateway_off_subnet", "is not on a connected subnet"),
    "route dev that does not exist": ("16_route_dev_missing", "no such interface"),
    "overlapping subnets on one node": ("17_overlapping_subnets", "overlaps"),
    "switching loop": ("18_switching_loop", "switching loop"),
    "dangling segment link": ("19_bad_links", "no segment named 's9'"),
    "link parameter errors": ("20_link_params", "is not a duration"),
    "unknown sysctl": ("21_sysctl", "unknown sysctl (did you mean"),
    "bad sysctl value": ("21_sysctl", "out of range"),
    "invalid names": ("22_invalid_names", "invalid node name"),
    "name too long": ("22_invalid_names", "longer than 24 characters"),
    "node and segment share a name": ("23_name_collisions", "share one namespace"),
    "generator pool exhausted": ("24_generator_pool", "not enough for count"),
    "generated problem reported once at the generator's line": ("25_generator_gateway", "h1 (and 3 more)"),
    "route syntax": ("26_route_syntax", "unknown word 'gw'"),
    "static ARP entry off-subnet": ("27_arp", "not on a connected subnet"),
    "document is not a mapping": ("28_not_a_mapping", "expected a mapping"),
    "switch-only options on a hub": ("29_segment_options", "applies to switches only"),
    "bad MAC syntax": ("30_mac_syntax", "is not a MAC address"),
    "link: naming a segment": ("31_link_vs_segment", "not a point-to-point link"),
    "several problems in one file": ("32_many_problems", "unknown sysctl"),
    "empty file": ("33_empty", "the file is empty"),
    "tap device name longer than IFNAMSIZ": ("34_tap", "Linux allows at most 15"),
    "tap unknown key": ("34_tap", "tap.vlan: unknown key"),
    "one TAP bridging two segments": ("34_tap", "already bridges segment lan1"),
    "placement of a name that does not exist": ("35_placement", "placement.h4: no node or segment named"),
    "placement on something not an address nor a resource": ("35_placement", "is not an IPv4 address"),
    "cluster options": ("35_placement", "cluster.encrypt: encrypt must be true or false"),
}


def problems_of(path: Path) -> str:
    with pytest.raises(TopologyError) as error:
        load_topology(path)
    return str(error.value).replace(str(path), path.name)


def test_corpus_has_at_least_25_cases_each_with_expectations():
    assert len(CASES) >= 25
    for case in CASES:
        assert case.with_suffix(".expected").is_file(), f"{case.name} has no .expected file"


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_broken_file_reports_exactly_the_expected_problems(case: Path):
    expected = case.with_suffix(".expected").read_text().rstrip("\n")
    assert problems_of(case) == expected


@pytest.mark.parametrize("problem_class", sorted(PROBLEM_CLASSES))
def test_every_problem_class_is_in_the_corpus(problem_class: str):
    stem, fragment = PROBLEM_CLASSES[problem_class]
    expected = (BROKEN / f"{stem}.expected").read_text()
    assert fragment in expected


def test_every_problem_line_has_file_line_path_and_message():
    for case in CASES:
        for line in problems_of(case).splitlines():
            file, number, rest = line.split(":", 2)
            assert file == case.name
            assert int(number) >= 1
            assert rest.startswith(" ") and rest.strip()


def test_file_with_several_problems_reports_all_of_them_in_file_order():
    text = problems_of(BROKEN / "32_many_problems.yaml")
    lines = text.splitlines()
    assert len(lines) == 7
    numbers = [int(line.split(":")[1]) for line in lines]
    assert numbers == sorted(numbers)
    for fragment in ("segments.lan1.delay", "nodes.h1.routes[0]", "nodes.h2.kind", "nodes.h2.interfaces.eth0.segment",
                     "nodes.h2.interfaces.eth0.ip", "nodes.r1.interfaces.eth0.ip", "nodes.r1.sysctl"):
        assert fragment in text


def test_problems_are_also_available_as_structured_values():
    with pytest.raises(TopologyError) as error:
        load_topology(BROKEN / "09_duplicate_ip.yaml")
    (problem,) = error.value.problems
    assert (problem.line, problem.path) == (12, "nodes.h2.interfaces.eth0.ip")
    assert problem.message == "duplicate address 10.0.1.10: also on h1:eth0 (line 8)"
