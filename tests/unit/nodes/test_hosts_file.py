"""Name lookup in the emulation's hosts file: /etc/hosts as glibc's files backend reads it."""
from __future__ import annotations

from nodes.kernel import lookup_hosts_file

HOSTS = """\
# the emulation's names
127.0.0.1\tlocalhost
10.0.1.10\th1 web  # an alias after the name
10.0.2.10   h2
10.9.9.9\th1
badline
"""


def test_a_name_or_an_alias_gives_the_address_of_its_first_line(tmp_path):
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    assert lookup_hosts_file(str(path), "h2") == "10.0.2.10"
    assert lookup_hosts_file(str(path), "web") == "10.0.1.10"
    assert lookup_hosts_file(str(path), "h1") == "10.0.1.10"  # the first line wins
    assert lookup_hosts_file(str(path), "H2") == "10.0.2.10"  # names match without regard to case


def test_comments_addresses_and_unknown_names_are_not_names(tmp_path):
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    for name in ("the", "emulation's", "alias", "10.0.2.10", "badline", "nosuchhost"):
        assert lookup_hosts_file(str(path), name) is None, name


def test_a_missing_file_resolves_nothing(tmp_path):
    assert lookup_hosts_file(str(tmp_path / "absent"), "h1") is None
