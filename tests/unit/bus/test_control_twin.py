"""A cluster process's control server: CURVE on tcp://, and a keyless ipc:// twin for the node's tools."""
from __future__ import annotations

import threading

import pytest
import zmq

from bus import curve
from bus.transport import ControlClient, ControlServer, ControlTimeout


@pytest.fixture
def server(tmp_path):
    keys = curve.CurveKeys.generate()
    probe = zmq.Context.instance().socket(zmq.ROUTER)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(linger=0)
    endpoint, local = f"tcp://127.0.0.1:{port}", f"ipc://{tmp_path}/h1.ctl"
    curve.add_local_twin(endpoint, local)
    context = zmq.Context()
    control = ControlServer(context, endpoint, {"hello": lambda: "hi"}, keys=keys)
    stop = threading.Event()

    def serve() -> None:
        with curve.serve_in_thread(context):
            poller = zmq.Poller()
            poller.register(control.socket, zmq.POLLIN)
            while not stop.is_set():
                if poller.poll(20):
                    control.handle_pending()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield endpoint, local, keys, context
    stop.set()
    thread.join(5)
    control.close()
    context.destroy(linger=0)
    curve._local_twins.pop(endpoint, None)


def test_the_ipc_twin_answers_without_keys_and_tcp_only_with_them(server):
    endpoint, local, keys, context = server
    with ControlClient(local, 2.0, context=context) as client:
        assert client.call("hello") == "hi"
    with pytest.raises(ControlTimeout):
        with ControlClient(endpoint, 0.5, context=context) as client:
            client.call("hello")
    curve.register([endpoint], keys)
    try:
        with ControlClient(endpoint, 2.0, context=context) as client:
            assert client.call("hello") == "hi"
    finally:
        curve.unregister([endpoint])


def test_a_twin_must_be_ipc():
    with pytest.raises(ValueError):
        curve.add_local_twin("tcp://127.0.0.1:1", "tcp://127.0.0.1:2")
