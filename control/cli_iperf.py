"""`netemu> iperf [SRC DST] [-t SECONDS] [-p PORT]`: Mininet's `iperf h1 h2`, with Debian's iperf3.

As Mininet's `Mininet.iperf` (mininet/net.py): the client is SRC, the server DST, the
test lasts 5 s by default (Mininet's `seconds=5`; iperf3's own default of 10 s is long
for an emulation), and the answer is one line, server first:

    *** Iperf: testing TCP bandwidth between h1 and h2
    *** Results: ['93.4 Mbits/sec', '95.1 Mbits/sec']

The first rate is what the server received (iperf3's `end.sum_received`: goodput
as the receiver measured it), the second what the client sent (`end.sum_sent`,
which counts bytes still in flight when the test stopped, hence a little higher).

Both programs run on their node through `node.exec` (control/programs.py), as
`h1 iperf3 ...` would: `iperf3 -s -1 --json` on DST (one test, then it exits);
once the node's socket table shows it listening (iperf3 prints nothing before
the end with --json), `iperf3 -c DST-ADDRESS -t SECONDS --json` on SRC. Whatever
fails (unknown node, iperf3 missing, refused, a timeout, Ctrl-C), neither
program is left running.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterator

from .cli_args import CommandError, _Parser
from .programs import ProgramError, describe_spawn_error

DEFAULT_SECONDS = 5           # Mininet.iperf(seconds=5)
DEFAULT_PORT = 5201           # iperf3's
MAX_SECONDS = 86400           # iperf3: "test duration too long (maximum = 86400 seconds)"
LISTEN_TIMEOUT = 10.0         # for the server to be listening on DST
CLIENT_MARGIN = 20.0          # beyond -t: the connect, the results exchange
SERVER_MARGIN = 5.0           # for the server's results once the client has its own
POLL_INTERVAL = 0.02

HELP = """iperf [SRC DST] [-t SECONDS] [-p PORT]: TCP goodput from SRC to DST with iperf3, as Mininet's iperf.
    iperf3 -s -1 runs on DST, iperf3 -c DST's first address on SRC (default: the first and last hosts),
    for SECONDS (default 5; iperf3's own default is 10) on PORT (default 5201). Prints
    *** Results: ['<server> Mbits/sec', '<client> Mbits/sec']: first what the server received
    (iperf3's sum_received, the goodput), then what the client sent (sum_sent)."""


class IperfError(Exception):
    """The test could not run or gave no result (said in one line)."""


@dataclass(frozen=True)
class IperfOptions:
    client: str
    server: str
    seconds: int = DEFAULT_SECONDS
    port: int = DEFAULT_PORT


def _integer(prog: str, what: str, text: str, minimum: int, maximum: int) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise CommandError(f"{prog}: {what} must be a whole number, got {text!r}") from None
    if not minimum <= value <= maximum:
        raise CommandError(f"{prog}: {what} must be {minimum}..{maximum}, got {value}")
    return value


def parse_iperf(args: list[str], hosts: list[str]) -> IperfOptions:
    """`[SRC DST] [-t SECONDS] [-p PORT]`; without SRC and DST, the first and last hosts (Mininet's default)."""
    parser = _Parser(prog="iperf", add_help=False)
    parser.add_argument("-t", dest="seconds", default=str(DEFAULT_SECONDS))
    parser.add_argument("-p", dest="port", default=str(DEFAULT_PORT))
    parser.add_argument("nodes", nargs="*")
    options = parser.parse_args(args)
    seconds = _integer("iperf", "-t SECONDS", options.seconds, 1, MAX_SECONDS)  # iperf3 reads -t with atoi
    port = _integer("iperf", "-p PORT", options.port, 1, 65535)
    if not options.nodes:
        if len(hosts) < 2:
            raise CommandError("iperf: needs two hosts (usage: iperf [SRC DST] [-t SECONDS] [-p PORT])")
        return IperfOptions(hosts[0], hosts[-1], seconds, port)
    if len(options.nodes) != 2:
        raise CommandError("usage: iperf [SRC DST] [-t SECONDS] [-p PORT]")
    return IperfOptions(options.nodes[0], options.nodes[1], seconds, port)


# -- iperf3's JSON ------------------------------------------------------------------------


def parse_report(text: str, who: str) -> dict[str, Any]:
    """The JSON document iperf3 --json printed; IperfError when there is none."""
    try:
        document = json.loads(text)
    except ValueError:
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        raise IperfError(f"{who}: iperf3 printed no JSON report" + (f" ({first[:120]})" if first else "")) from None
    if not isinstance(document, dict):
        raise IperfError(f"{who}: iperf3's report is not a JSON object")
    return document


def goodput(document: dict[str, Any], side: str, who: str) -> float:
    """Bits per second of `end.sum_received` (side "server") or `end.sum_sent` ("client"); its error if any."""
    if document.get("error"):
        raise IperfError(f"{who}: {document['error']}")
    key = "sum_received" if side == "server" else "sum_sent"
    try:
        rate = document["end"][key]["bits_per_second"]
    except (KeyError, TypeError):
        raise IperfError(f"{who}: iperf3's report has no end.{key}") from None
    if not isinstance(rate, (int, float)) or isinstance(rate, bool):
        raise IperfError(f"{who}: iperf3's end.{key}.bits_per_second is not a number: {rate!r}")
    return float(rate)


def format_rate(bits_per_second: float) -> str:
    """In Mbits/sec with iperf's precision (unit_snprintf: 3 significant digits, at most 2 decimals)."""
    value = bits_per_second / 1e6
    if value < 9.995:
        return f"{value:.2f} Mbits/sec"
    if value < 99.95:
        return f"{value:.1f} Mbits/sec"
    return f"{value:.0f} Mbits/sec"


def results_line(server_bps: float, client_bps: float) -> str:
    """Mininet's line: `*** Results: ['<server> Mbits/sec', '<client> Mbits/sec']`."""
    return f"*** Results: {[format_rate(server_bps), format_rate(client_bps)]!r}"


# -- running it -----------------------------------------------------------------------------


def listening(rows: list[dict[str, Any]], port: int, pid: int) -> bool:
    """True when the node's socket table (`sockets`, as `ss -tl`) has the server's TCP listener on `port`."""
    for row in rows:
        if not str(row.get("proto", "")).startswith("tcp") or row.get("state") != "LISTEN":
            continue
        if str(row.get("local", "")).rpartition(":")[2] != str(port):
            continue
        if row.get("pid", pid) == pid:     # (another program's listener there: iperf3 fails to bind, and says so)
            return True
    return False


class _Run:
    """One program of the test: its Popen and the files its output goes to (a pipe could fill up)."""

    def __init__(self, net: Any, node: str, argv: list[str], stack: contextlib.ExitStack) -> None:
        self.node, self.argv = node, argv
        self.stdout: IO[bytes] = stack.enter_context(tempfile.TemporaryFile())
        self.stderr: IO[bytes] = stack.enter_context(tempfile.TemporaryFile())
        try:
            self.process: subprocess.Popen = net[node].exec(argv, stdin=subprocess.DEVNULL, stdout=self.stdout,
                                                            stderr=self.stderr)
        except OSError as error:
            message = describe_spawn_error(argv, error)[1]
            if isinstance(error, FileNotFoundError):
                message += " (install iperf3: apt-get install -y iperf3)"
            raise IperfError(f"{node}: {message}") from None
        except ProgramError as error:
            raise IperfError(f"{node}: {error}") from None
        stack.callback(self.kill)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5.0)

    def result(self, side: str) -> float:
        """Its goodput from its report; what it said when it failed without one."""
        try:
            document = parse_report(self.output(), self.node)
        except IperfError:
            if self.process.returncode:
                raise IperfError(self.complaint()) from None
            raise
        return goodput(document, side, self.node)

    def output(self) -> str:
        self.stdout.seek(0)
        return self.stdout.read().decode(errors="replace")

    def complaint(self) -> str:
        """What it said when it failed: the JSON's error, else the last line on stderr, else its status."""
        with contextlib.suppress(IperfError, ValueError):
            error = parse_report(self.output(), self.node).get("error")
            if error:
                return f"{self.node}: {error}"
        self.stderr.seek(0)
        lines = [line.strip() for line in self.stderr.read().decode(errors="replace").splitlines() if line.strip()]
        if lines:
            return f"{self.node}: {lines[-1]}"
        return f"{self.node}: iperf3 exited with status {self.process.returncode}"


def _deadline_loop(timeout: float) -> Iterator[float]:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        yield left
        time.sleep(min(POLL_INTERVAL, max(left, 0.0)))


def run_iperf(net: Any, options: IperfOptions, out: Callable[..., None]) -> tuple[float, float]:
    """Run the test; prints Mininet's two lines through `out` and returns (server, client) bits per second."""
    server_node = net[options.server]
    address = server_node.addresses[0]
    out(f"*** Iperf: testing TCP bandwidth between {options.client} and {options.server}")
    with contextlib.ExitStack() as stack:
        server = _Run(net, options.server, ["iperf3", "-s", "-1", "--json", "-p", str(options.port)], stack)
        _wait_listening(server_node, server, options.port)
        client = _Run(net, options.client, ["iperf3", "-c", address, "-p", str(options.port), "-t",
                                            str(options.seconds), "--json"], stack)
        limit = options.seconds + CLIENT_MARGIN
        try:
            client.process.wait(limit)
        except subprocess.TimeoutExpired:
            raise IperfError(f"{options.client}: no result within {limit:g} s (stopped both iperf3)") from None
        client_bps = client.result("client")
        try:
            server.process.wait(SERVER_MARGIN)
        except subprocess.TimeoutExpired:
            raise IperfError(f"{options.server}: the server gave no result {SERVER_MARGIN:g} s after the client's "
                             "(stopped it)") from None
        server_bps = server.result("server")
    out(results_line(server_bps, client_bps))
    return server_bps, client_bps


def _wait_listening(node: Any, server: _Run, port: int) -> None:
    """Until the node's socket table shows the server listening: no fixed sleep, a deadline."""
    for _ in _deadline_loop(LISTEN_TIMEOUT):
        if server.process.poll() is not None:
            raise IperfError(server.complaint())
        if listening(node.call("sockets"), port, server.process.pid):
            return
    raise IperfError(f"{server.node}: iperf3 -s was not listening on port {port} within {LISTEN_TIMEOUT:g} s "
                     "(stopped it)")
