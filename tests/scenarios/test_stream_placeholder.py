"""A stream socket before connect()/listen() (nodes/sockfs_file.py `Placeholders`): the program's
end is an unconnected unix socket, not a connected pair, so what Python's ssl and programs probe
on an unconnected TCP socket holds: an HTTPS server wrapping its listening socket
(`httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)`) serves curl, an ssl client
wraps its socket before connecting; a never-connected socket's calls fail, poll as Linux's; the
same socket is connected in place (dup() and epoll registrations made before connect() follow);
a placeholder or listener closed unconnected frees its port at once.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

from control.emulation import Emulation
from tests.conftest import require_tool, require_trap

from .helpers import next_line, private_run_base, stop, topology
from .test_programs import run, started
from .test_stream_programs import ECHO_TO_EOF

pytestmark = pytest.mark.timeout(120)

H1, H2 = "10.0.1.10", "10.0.2.10"

# h2: http.server over TLS, the listening socket wrapped (the usual recipe: ssl's SSLSocket._create
# probes an unconnected socket with getpeername() and a non-blocking recv(1): ENOTCONN or EINVAL).
HTTPS_LISTENER_WRAPPED = """
    import functools, http.server, ssl, sys
    port, directory, cert, key = sys.argv[1:]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    httpd = http.server.HTTPServer(("0.0.0.0", int(port)), handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    print("ready")
    httpd.serve_forever()
"""

# A never-connected socket's calls, run on the host and on a node alike.
UNCONNECTED = """
    import errno, json, select, socket
    def outcome(action):
        try:
            return ["ok", action()]
        except OSError as error:
            return [errno.errorcode.get(error.errno, error.errno)]
    s = socket.socket()
    poller = select.poll()
    poller.register(s, select.POLLIN | select.POLLOUT)
    print(json.dumps({
        "poll": poller.poll(0)[0][1],
        "getpeername": outcome(s.getpeername),
        "recv": outcome(lambda: s.recv(1)),
        "send": outcome(lambda: s.send(b"x", socket.MSG_NOSIGNAL)),
        "recvfrom": outcome(lambda: s.recvfrom(1)),
        "sendto": outcome(lambda: s.sendto(b"x", socket.MSG_NOSIGNAL, ("10.0.2.10", 9))),
        "accept": outcome(s.accept),
    }))
"""


@pytest.fixture(scope="module")
def net():
    require_trap()
    with private_run_base():
        with Emulation(topology("two_lans"), name="scn-placeholder") as emulation:
            yield emulation


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    openssl = require_tool("openssl")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=h2", "-addext", "subjectAltName=DNS:h2"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_an_https_server_wrapping_its_listening_socket_serves_curl_byte_exact(net, certificate, tmp_path):
    require_tool("curl")
    cert, key = certificate
    served = tmp_path / "www"
    served.mkdir()
    data = os.urandom(300_000)
    (served / "file").write_bytes(data)
    server, lines = started(net, "h2", HTTPS_LISTENER_WRAPPED, "8453", str(served), str(cert), str(key))
    try:
        assert next_line(server, lines) == "ready"
        for attempt in range(2):                # the listener keeps serving after the first connection
            out = tmp_path / f"got{attempt}"
            result = net["h1"].run(["curl", "-sS", "--fail", "-k", "-o", str(out), f"https://{H2}:8453/file"],
                                   capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
    finally:
        stop(server)


def test_an_ssl_client_wraps_its_socket_before_connecting(net, certificate):
    cert, key = certificate
    server, lines = started(net, "h2", HTTPS_LISTENER_WRAPPED, "8454", str(cert.parent), str(cert), str(key))
    try:
        assert next_line(server, lines) == "ready"
        out = run(net, "h1", """
            import socket, ssl, sys
            context = ssl.create_default_context(cafile=sys.argv[1])
            tls = context.wrap_socket(socket.socket(), server_hostname="h2")     # unconnected yet
            tls.settimeout(30)
            tls.connect(("10.0.2.10", 8454))
            version = tls.version()
            tls.sendall(b"GET /cert.pem HTTP/1.0\\r\\n\\r\\n")
            reply = b"".join(iter(lambda: tls.recv(65536), b""))
            print(reply.split(b"\\r\\n", 1)[0].decode(), version.startswith("TLS"), reply.endswith(open(sys.argv[1], "rb").read()))
        """, str(cert))
        assert out.split()[1:] == ["200", "OK", "True", "True"]
    finally:
        stop(server)


def test_a_never_connected_socket_fails_and_polls_as_linuxs(net):
    host = subprocess.run([sys.executable, "-c", textwrap.dedent(UNCONNECTED)], capture_output=True, text=True,
                          timeout=30, check=True)
    linux, ours = json.loads(host.stdout), json.loads(run(net, "h1", UNCONNECTED))
    assert linux["recv"] == ["ENOTCONN"] and linux["send"] == ["EPIPE"]         # what this host's TCP says
    # the same where the node answers (trapped) or the unix socket agrees with TCP
    for name in ("poll", "getpeername", "recvfrom", "sendto", "accept"):
        assert ours[name] == linux[name], name
    # native recv()/send() on the placeholder: an error all the same, unix_stream's (docs/programs.md)
    assert ours["recv"] == ["EINVAL"] and ours["send"] == ["ENOTCONN"]


def test_a_dup_and_an_epoll_registration_made_before_connect_follow_the_socket(net):
    server, lines = started(net, "h2", ECHO_TO_EOF, "6230")
    try:
        assert next_line(server, lines) == "ready"
        out = run(net, "h1", """
            import errno, select, socket
            s = socket.socket()
            s.setblocking(False)
            ep = select.epoll()
            ep.register(s.fileno(), select.EPOLLOUT)       # before connect, as nginx does for upstreams
            copy = s.dup()
            assert s.connect_ex(("10.0.2.10", 6230)) == errno.EINPROGRESS
            events = ep.poll(20)
            print(events == [(s.fileno(), select.EPOLLOUT)], s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
            copy.setblocking(True)
            copy.sendall(b"through the dup")
            copy.shutdown(socket.SHUT_WR)
            print(b"".join(iter(lambda: copy.recv(4096), b"")).decode(), copy.getpeername()[0])
        """)
        assert out == f"True 0\nthrough the dup {H2}\n"
        assert next_line(server, lines) == f"15 {H1}"
    finally:
        stop(server)


def test_a_placeholder_or_listener_closed_unconnected_frees_its_port_at_once(net):
    out = run(net, "h1", """
        import socket
        s = socket.socket()
        s.bind(("0.0.0.0", 0))                  # a free port, as test harnesses find one
        port = s.getsockname()[1]
        s.close()
        listener = socket.socket()
        listener.bind(("0.0.0.0", port))
        listener.listen()
        listener.close()
        again = socket.socket()
        again.bind(("0.0.0.0", port))
        again.listen()
        print(again.getsockname()[1] == port)
    """)
    assert out == "True\n"
