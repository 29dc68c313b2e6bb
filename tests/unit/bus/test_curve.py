"""bus/curve.py in one process: keys, which endpoints get them, a CURVE control channel over
tcp://127.0.0.1 served by an EventLoop (ZAP polled by the loop), refusals logged, ipc untouched."""
from __future__ import annotations

import logging
import threading

import pytest
import zmq

from bus import curve
from bus.runtime import EventLoop, prepare_process
from bus.transport import ControlClient, ControlServer, ControlTimeout, ipc_endpoint

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def fresh_curve():
    curve.use(None)
    curve._registry.clear()
    yield
    curve.use(None)
    curve._registry.clear()


@pytest.fixture
def served():
    """A ControlServer on tcp://127.0.0.1:<free port> with keys, its EventLoop running in a thread."""
    keys = curve.CurveKeys.generate()
    context = zmq.Context()
    loop = EventLoop()
    server = ControlServer(context, "tcp://127.0.0.1:0", {"echo": lambda value: value}, keys=keys)
    loop.add_reader(server.socket, server.handle_pending)
    thread = threading.Thread(target=loop.run)
    thread.start()
    try:
        yield keys, server, loop
    finally:
        loop.stop()
        thread.join()
        server.close()
        context.term()  # would hang if the ZAP handler or a monitor were left open


def test_keys_round_trip_and_never_print_secrets():
    keys = curve.CurveKeys.generate()
    assert curve.CurveKeys.from_dict(keys.as_dict()) == keys
    assert len(keys.server_public) == 40 and keys.server_public != keys.client_public
    assert keys.server_secret not in repr(keys) and keys.client_secret not in repr(keys)
    with pytest.raises(ValueError, match="z85"):
        curve.CurveKeys("short", keys.server_secret, keys.client_public, keys.client_secret)


def test_keys_for_prefers_the_registry_and_never_keys_ipc():
    default, registered = curve.CurveKeys.generate(), curve.CurveKeys.generate()
    assert curve.keys_for("tcp://10.0.0.2:5000") is None
    curve.use(default.as_dict())
    curve.register(["tcp://10.0.0.2:5000"], registered)
    assert curve.keys_for("tcp://10.0.0.2:5000") == registered
    assert curve.keys_for("tcp://10.0.0.2:5001") == default
    assert curve.keys_for("ipc:///tmp/x.ctl") is None
    curve.unregister(["tcp://10.0.0.2:5000"])
    assert curve.keys_for("tcp://10.0.0.2:5000") == default


def test_prepare_process_sets_the_process_keys():
    keys = curve.CurveKeys.generate()
    lifecycle = prepare_process({"name": "t", "curve": keys.as_dict()})
    lifecycle.restore()
    assert curve.keys_for("tcp://127.0.0.1:1") == keys
    prepare_process({"name": "t"}).restore()
    assert curve.keys_for("tcp://127.0.0.1:1") is None


def test_a_client_with_the_emulation_keys_is_answered(served):
    keys, server, _ = served
    assert server.endpoint.startswith("tcp://127.0.0.1:") and not server.endpoint.endswith(":0")
    curve.register([server.endpoint], keys)
    with ControlClient(server.endpoint, timeout=5.0) as client:
        assert client.call("echo", value="over curve") == "over curve"
    assert ControlClient.fan_out([(server.endpoint, "echo", {"value": 1})] * 3, timeout=5.0) == [1, 1, 1]
    assert server.socket.curve_server == 1


def test_a_client_with_another_keypair_is_refused_and_logged(served, caplog):
    keys, server, _ = served
    stranger = curve.CurveKeys.generate()
    impostor = curve.CurveKeys(keys.server_public, keys.server_secret, stranger.client_public, stranger.client_secret)
    caplog.set_level(logging.WARNING, logger="netemu.curve")
    with ControlClient(server.endpoint, timeout=0.5, keys=impostor) as client, pytest.raises(ControlTimeout):
        client.call("echo", value="let me in")
    line = f"refused unauthenticated peer 127.0.0.1 on {server.endpoint} (unknown client key)"
    assert line in caplog.messages
    assert curve.zap_handler(server.socket.context).accepted == 0


def test_a_plaintext_client_gets_no_answer_and_is_logged(served, caplog):
    _, server, _ = served
    caplog.set_level(logging.WARNING, logger="netemu.curve")
    with ControlClient(server.endpoint, timeout=0.5) as client, pytest.raises(ControlTimeout):
        client.call("echo", value="plain")  # no keys registered: a plaintext DEALER
    # Which side of the greeting fails first is a race: a mechanism mismatch, or the peer hung up; the
    # address is known when the connection still existed as the loop read the monitor's "accepted".
    lines = [m for m in caplog.messages if m.startswith("refused unauthenticated peer ")]
    assert lines and all(f" on {server.endpoint} (handshake failed: " in m for m in lines)


def test_a_client_expecting_another_server_key_is_logged(served, caplog):
    keys, server, _ = served
    other = curve.CurveKeys.generate()
    wrong = curve.CurveKeys(other.server_public, other.server_secret, keys.client_public, keys.client_secret)
    caplog.set_level(logging.WARNING, logger="netemu.curve")
    with ControlClient(server.endpoint, timeout=0.5, keys=wrong) as client, pytest.raises(ControlTimeout):
        client.call("echo", value="x")
    assert any("(handshake failed: cannot decrypt (wrong server key?))" in m for m in caplog.messages)


def test_ipc_endpoints_never_use_curve(run_dir):
    curve.use(curve.CurveKeys.generate())  # the process has keys: ipc stays plaintext all the same
    context = zmq.Context()
    endpoint = ipc_endpoint(run_dir, "x.ctl")
    server = ControlServer(context, endpoint, {"echo": lambda value: value})
    try:
        assert server.endpoint == endpoint and server.socket.curve_server == 0
        assert curve.zap_handler(context) is None and curve.companions(server.socket) == []
        with ControlClient(endpoint, timeout=1.0, context=context) as client:
            server_thread = threading.Thread(target=lambda: server.socket.poll(2000) and server.handle_pending())
            server_thread.start()
            assert client.call("echo", value="ipc") == "ipc"
            server_thread.join()
    finally:
        server.close()
        context.term()


def test_serve_in_thread_authenticates_without_a_loop():
    keys = curve.CurveKeys.generate()
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    dealer = context.socket(zmq.DEALER)
    try:
        endpoint = curve.bind(router, "tcp://127.0.0.1:0", keys)
        assert curve.secure_client(dealer, endpoint, keys)
        dealer.connect(endpoint)
        with curve.serve_in_thread(context) as handler:
            dealer.send(b"hello")
            assert router.poll(5000)
            assert router.recv_multipart()[-1] == b"hello"
        assert handler is not None and handler.accepted == 1
    finally:
        dealer.close(0)
        curve.release(router)
        router.close(0)
        context.term()
