"""Deferred control replies: a handler may answer after the loop has moved on."""
from __future__ import annotations

import tempfile

import pytest
import zmq

from bus.transport import ControlClient, ControlError, ControlServer, Deferred, ipc_endpoint

pytestmark = pytest.mark.timeout(20)


def test_deferred_reply_is_sent_when_resolved_and_other_requests_are_answered_meanwhile():
    context = zmq.Context()
    with tempfile.TemporaryDirectory(prefix="ne-", dir="/tmp") as directory:
        endpoint = ipc_endpoint(directory, "ctl")
        pending: list[Deferred] = []

        def slow() -> Deferred:
            deferred = Deferred()
            pending.append(deferred)
            return deferred

        server = ControlServer(context, endpoint, {"slow": slow, "fast": lambda: "fast", "fails": slow})
        slow_client = context.socket(zmq.DEALER)
        slow_client.connect(endpoint)
        fast_client = ControlClient(endpoint, timeout=2.0, context=context)
        try:
            import msgpack

            slow_client.send_multipart([b"", msgpack.packb({"op": "slow"})])
            assert server.socket.poll(2000)
            server.handle_pending()
            assert len(pending) == 1 and not slow_client.poll(100)
            fast_client._connect()
            # Serve the fast request while the slow one is still pending.
            import threading

            answer = {}
            thread = threading.Thread(target=lambda: answer.setdefault("fast", fast_client.call("fast")))
            thread.start()
            assert server.socket.poll(2000)
            server.handle_pending()
            thread.join(5)
            assert answer == {"fast": "fast"}
            pending[0].resolve({"done": True})
            assert slow_client.poll(2000)
            assert msgpack.unpackb(slow_client.recv_multipart()[-1]) == {"ok": True, "result": {"done": True}}
            pending[0].resolve("again")  # settling twice sends nothing more
            assert not slow_client.poll(100)
            thread = threading.Thread(target=lambda: answer.setdefault("error", _call_error(fast_client)))
            thread.start()
            assert server.socket.poll(2000)
            server.handle_pending()
            pending[1].reject(OSError(113, "No route to host"))
            thread.join(5)
            assert answer["error"] == (113, "No route to host")
        finally:
            fast_client.close()
            slow_client.close(linger=0)
            server.close()
            context.term()


def _call_error(client: ControlClient):
    try:
        client.call("fails")
    except ControlError as error:
        return error.errno, str(error)
    return None
