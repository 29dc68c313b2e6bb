"""nodes.memnet.warm_up: the paths the zygote runs before forking nodes really run."""
from __future__ import annotations

import threading

from nodes.kernel import zygote_warm_up
from nodes.memnet import warm_up


def test_warm_up_pings_traces_and_delivers_udp_across_the_router():
    assert warm_up() == {"echo_replies": 80, "traceroute_hops": 2, "udp_datagrams": 20}


def test_the_kernels_zygote_hook_is_the_warm_up_and_starts_no_thread():
    before = threading.active_count()
    assert zygote_warm_up()["echo_replies"] == 80
    assert threading.active_count() == before  # a thread in the zygote would be lost in every fork
