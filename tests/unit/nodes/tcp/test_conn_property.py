"""Two TcpConnections back to back through an in-memory link with seeded loss (up to 30%),
reordering, duplication and corruption (dropped as a checksum failure): every byte stream
arrives byte-exact, in order, exactly once, both ways, and both ends close cleanly."""
from __future__ import annotations

import random

import pytest

from nodes.tcp.states import TCP_CLOSE, TCP_ESTABLISHED, TCP_TIME_WAIT, TcpConfig
from tests.unit.nodes.tcp.connpair import Impairment, Pair

# Generous limits so that 30% loss in both directions cannot exhaust them: the property is
# about the bytes, not about giving up (which test_conn_loss covers).
LIMITS = dict(time_wait=300.0, rto_max=10.0, retries2=60, orphan_retries=60, syn_retries=30, synack_retries=30)


def run_exchange(seed: int, loss: float, *, size_a: int | None = None, size_b: int | None = None,
                 close: bool = False) -> Pair:
    rng = random.Random(seed)
    config_a = TcpConfig(**LIMITS, sack=rng.random() < 0.8, timestamps=rng.random() < 0.8,
                         window_scaling=rng.random() < 0.8)
    config_b = TcpConfig(**LIMITS, sack=rng.random() < 0.8, timestamps=rng.random() < 0.8,
                         window_scaling=rng.random() < 0.8, congestion=rng.choice(("reno", "cubic")))
    impair = Impairment(loss=loss, duplicate=0.05, corrupt=0.05, reorder=0.15, delay=0.002, jitter=0.002)
    pair = Pair(config_a, config_b=config_b, seed=seed, impair=impair,
                isn_a=(2**32 - rng.randrange(1, 60000)), isn_b=rng.randrange(2**32),
                rcvbuf=rng.choice((None, 2048, 8192, 65536)), sndbuf=rng.choice((None, 1000, 4096)))
    data_a = rng.randbytes(size_a if size_a is not None else rng.randrange(0, 120_000))
    data_b = rng.randbytes(size_b if size_b is not None else rng.randrange(0, 30_000))
    pair.a.connect(pair.now)
    pos = {"a": 0, "b": 0}
    shut = {"a": False, "b": False}

    def pump() -> bool:
        for key, conn, data in (("a", pair.a, data_a), ("b", pair.b, data_b)):
            if conn is None or conn.state not in (TCP_ESTABLISHED, 8):
                continue
            if pos[key] < len(data):
                pos[key] += conn.send(data[pos[key]:pos[key] + rng.randrange(1, 20000)], pair.now)
            elif not shut[key]:
                if not close:
                    conn.shutdown_send(pair.now)
                elif key == "a":
                    conn.close(pair.now)  # orphaned with data in flight: FIN-WAIT-1, retransmissions
                elif not conn.at_eof:
                    continue
                else:
                    conn.close(pair.now)  # CLOSE-WAIT -> LAST-ACK
                shut[key] = True
        return (pair.b is not None and bytes(pair.received["b"]) == data_a and bytes(pair.received["a"]) == data_b
                and (close or pair.a.at_eof) and pair.b.at_eof)

    assert pair.run(until=20000, condition=pump), (seed, pair.a, pair.b)
    assert bytes(pair.received["b"]) == data_a and bytes(pair.received["a"]) == data_b
    done = (TCP_TIME_WAIT, TCP_CLOSE)
    assert pair.run(until=pair.now + 20000, condition=lambda: pair.a.state in done and pair.b.state in done)
    pair.a.close(pair.now)
    pair.b.close(pair.now)
    assert pair.run(until=pair.now + 20000,
                    condition=lambda: pair.a.state == TCP_CLOSE and pair.b.state == TCP_CLOSE)
    assert pair.a.error == 0 and pair.b.error == 0
    assert pair.stats_a.CurrEstab == 0 and pair.stats_b.CurrEstab == 0
    return pair


@pytest.mark.parametrize("seed", range(200))
def test_streams_survive_impairments(seed):
    run_exchange(seed, (0.0, 0.05, 0.15, 0.3)[seed % 4])


def test_clean_link_loses_nothing():
    pair = run_exchange(1000, 0.0, size_a=300_000, size_b=5000)
    assert pair.stats_a.RetransSegs == 0 or pair.impair.duplicate  # only impairments cause them


def test_lossy_link_recovers_with_retransmissions():
    pair = run_exchange(7, 0.3, size_a=100_000, size_b=100_000)
    assert pair.stats_a.RetransSegs > 0 and pair.stats_b.RetransSegs > 0


@pytest.mark.parametrize("seed", range(1000, 1040))
def test_close_instead_of_shutdown(seed):
    """close() right after the last byte (orphaned FIN-WAIT): still byte-exact."""
    run_exchange(seed, 0.1, size_b=0, close=True)
