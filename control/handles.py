"""Handles of a running emulation: `NodeHandle` (one node's kernel), `LinkHandle` (one port of a
segment), and the results of their probes (`PingResult`, `Hop`).

`control.emulation.Emulation` hands them out (`net["h1"]`, `net.link(a, b)`);
they are importable from there too.
"""
from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass, field
from socket import AF_INET, SOCK_STREAM
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from bus.shaping import parse_link_params
from bus.transport import ControlClient

if TYPE_CHECKING:
    from .emulation import Emulation
    from .programs import NodeSite


@dataclass
class PingResult:
    """What `ping -c COUNT` reports: sent, received, round-trip times (ms)."""

    destination: str
    sent: int
    received: int
    rtts: list[float]
    errors: list[dict[str, Any]]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def loss(self) -> float:
        """Fraction of echo requests without a reply (0.0 .. 1.0)."""
        return (self.sent - self.received) / self.sent if self.sent else 1.0

    @classmethod
    def from_result(cls, result: dict[str, Any]) -> "PingResult":
        return cls(result["destination"], result["transmitted"], result["received"],
                   [reply["rtt_ms"] for reply in result["replies"]], result["error_replies"], result)


@dataclass
class Hop:
    """One line of traceroute: the TTL, who answered, and each probe's RTT (None = `*`)."""

    hop: int
    address: str | None
    rtts: list[float | None]
    marks: list[str] = field(default_factory=list)


class NodeHandle:
    """One host or router of a running emulation."""

    def __init__(self, emulation: "Emulation", name: str) -> None:
        self.emulation = emulation
        self.name = name
        self.model = emulation.topology.nodes[name]

    def __repr__(self) -> str:
        return f"<NodeHandle {self.name} ({self.model.kind}) pid={self.pid}>"

    @property
    def pid(self) -> int | None:
        """The kernel process's pid; None once it has exited (until `restart()`)."""
        handle = self.emulation.supervisor[self.name]
        return handle.pid if handle.alive else None

    @property
    def addresses(self) -> list[str]:
        return [str(interface.address) for interface in self.model.interfaces.values()]

    def call(self, op: str, /, **args: Any) -> Any:
        """One control request to this node's kernel (raises ControlError / ControlTimeout)."""
        return self.request(op, args)

    def request(self, op: str, args: dict[str, Any], timeout: float = 5.0) -> Any:
        """Like `call`, with an explicit reply timeout (for requests that take a while)."""
        with ControlClient(self.emulation.supervisor[self.name].control, timeout) as client:
            return client.request(op, args)

    # -- probes ---------------------------------------------------------------

    def ping(self, destination: str, count: int = 3, size: int = 56, interval: float = 1.0,
             timeout: float = 2.0, ttl: int | None = None, dont_fragment: bool = False) -> PingResult:
        """`ping -c COUNT -s SIZE -i INTERVAL -W TIMEOUT [-t TTL] DESTINATION` from this node."""
        result = self.request("ping", {"dst": destination, "count": count, "size": size, "interval": interval,
                                       "timeout": timeout, "ttl": ttl, "dont_fragment": dont_fragment},
                              timeout=count * interval + timeout + 5.0)
        return PingResult.from_result(result)

    def traceroute(self, destination: str, max_hops: int = 30, probes: int = 3, wait: float = 2.0) -> list[Hop]:
        """`traceroute -m MAX_HOPS -q PROBES -w WAIT DESTINATION`: one Hop per TTL."""
        result = self.request("traceroute", {"dst": destination, "max_hops": max_hops, "probes": probes,
                                             "wait": wait}, timeout=max_hops * probes * (wait + 0.5) + 5.0)
        return [Hop(hop["hop"], hop["address"], [p["rtt_ms"] if p else None for p in hop["probes"]],
                    [p["mark"] for p in hop["probes"] if p and "mark" in p])
                for hop in result["hops"]]

    # -- tables ---------------------------------------------------------------

    def arp(self) -> list[dict[str, Any]]:
        """`ip neigh show` as a list of dicts (ip, dev, lladdr, state, ...)."""
        return self.call("neigh")

    def routes(self, table: str = "main") -> list[dict[str, Any]]:
        """`ip route show [table local|all]`."""
        return self.call("routes", table=table)

    def route_cache(self) -> dict[str, Any]:
        return self.call("route_cache")

    def interfaces(self) -> list[dict[str, Any]]:
        """`ip -s addr show`."""
        return self.call("interfaces")

    def counters(self) -> dict[str, Any]:
        """/proc/net/snmp-style counters: Ip, Icmp, Udp, arp_cache, softnet, devices..."""
        return self.call("counters")

    def sysctl(self, name: str | None = None, value: Any = None) -> Any:
        return self.call("sysctl", name=name, value=value)

    def add_route(self, dst: str, gateway: str | None = None, dev: str | None = None, metric: int = 0) -> None:
        self.call("route_add", dst=dst, gateway=gateway, dev=dev, metric=metric)

    def delete_route(self, dst: str, gateway: str | None = None, dev: str | None = None) -> None:
        self.call("route_del", dst=dst, gateway=gateway, dev=dev)

    def flush_arp(self, dev: str | None = None) -> None:
        """`ip neigh flush dev DEV` (all devices when None)."""
        self.call("neigh_flush", dev=dev)

    def set_link(self, dev: str, up: bool) -> None:
        """`ip link set DEV up|down` inside the node (the NIC side, not the wire)."""
        self.call("link_set", dev=dev, up=up)

    # -- process faults -------------------------------------------------------

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the node's kernel process (a crash: its neighbours notice only by silence)."""
        self.emulation.supervisor.kill(self.name, sig)
        self.emulation._wait_exit(self.name)

    def restart(self) -> None:
        """Start the node again with its original configuration and wait until it is attached."""
        emulation = self.emulation

        def restart() -> None:
            emulation.supervisor.restart(self.name, ready_timeout=emulation.ready_timeout)
            emulation._wait_attached([interface.attachment for interface in self.model.interfaces.values()])
        programs = emulation.__dict__.get("programs")
        if emulation.cluster is not None and not emulation.cluster.is_local(self.name):
            emulation.cluster.rehand(self.name, restart)  # its programs are its agent's
        elif programs is None:
            restart()
        else:                     # programs outlive their node: the new kernel serves them
            programs.rehand(self.name, restart)

    def pause(self) -> None:
        """Freeze the node (SIGSTOP): its timers stop, frames queue up, control requests time out."""
        self._live_pid()
        self.emulation.supervisor.send_signal(self.name, signal.SIGSTOP)  # through its zygote, on any machine

    def resume(self) -> None:
        """Thaw a paused node (SIGCONT)."""
        self._live_pid()
        self.emulation.supervisor.send_signal(self.name, signal.SIGCONT)

    def _live_pid(self) -> int:
        handle = self.emulation.supervisor[self.name]
        if not handle.alive or handle.pid is None:
            raise ProcessLookupError(f"{self.name} is not running")
        return handle.pid

    # -- programs on the node (control/programs.py, docs/programs.md) ------------

    def site(self) -> "NodeSite":
        """Where this node is reached: run directory, control endpoint, syscall socket, hosts file."""
        from .programs import NodeSite, ProgramError

        plan = self.emulation.plan
        assert plan is not None, "the emulation is not started"
        cluster = self.emulation.cluster
        if cluster is not None:  # across machines: only a node of the controller's own machine has a site here
            if not cluster.is_local(self.name):
                raise ProgramError(f"{self.name} runs on machine {cluster.machine_of(self.name)}, not this one: "
                                   "its sockets are not reachable from here (exec and run relay through its agent)")
            return NodeSite(self.emulation.name, self.name, cluster.machine_run_dir(self.name))
        return NodeSite(self.emulation.name, self.name, plan.run_dir)

    def exec(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
             **popen_kwargs: Any) -> subprocess.Popen:
        """Start `argv` with its sockets on this node: the `subprocess.Popen` of the program itself.

        `popen_kwargs` are Popen's (stdin, stdout, stderr, text, cwd...); `env`
        replaces ours as the base, the node's variables (NETEMU_NODE, PATH with
        the node's tools first) go on top. Raises FileNotFoundError/PermissionError
        as Popen does, `ProgramError` when programs cannot run here (no root,
        no seccomp user notification). The program runs until it exits or the
        emulation is torn down (then it and all its processes are stopped).
        """
        from .programs import ProgramTable

        emulation = self.emulation
        if emulation.cluster is not None and not emulation.cluster.is_local(self.name):
            from .remote_exec import RemoteProcess  # a node of another machine: through its agent

            return RemoteProcess(emulation.cluster.relay_caller(self.name, "exec_call"), self.name, argv, env=env,
                                 **popen_kwargs)  # type: ignore[return-value]
        if "programs" not in emulation.__dict__:
            emulation.__dict__.setdefault("programs", ProgramTable(lambda node: emulation.supervisor[node].alive))
        table = emulation.__dict__["programs"]
        return table.start(self.site(), argv, env=env, **popen_kwargs).popen

    def run(self, argv: Sequence[str], *, input: Any = None, capture_output: bool = False,
            timeout: float | None = None, check: bool = False, **popen_kwargs: Any) -> subprocess.CompletedProcess:
        """Run `argv` on this node to completion, as `subprocess.run` does (input, capture_output,
        timeout: the program is killed, then TimeoutExpired; check: CalledProcessError)."""
        if input is not None:
            if popen_kwargs.get("stdin") is not None:
                raise ValueError("stdin and input arguments may not both be used")
            popen_kwargs["stdin"] = subprocess.PIPE
        if capture_output:
            if popen_kwargs.get("stdout") is not None or popen_kwargs.get("stderr") is not None:
                raise ValueError("stdout and stderr arguments may not be used with capture_output")
            popen_kwargs["stdout"] = popen_kwargs["stderr"] = subprocess.PIPE
        with self.exec(argv, **popen_kwargs) as process:
            try:
                stdout, stderr = process.communicate(input, timeout=timeout)
            except subprocess.TimeoutExpired as expired:
                process.kill()
                expired.output, expired.stderr = process.communicate()
                raise
            except BaseException:
                process.kill()
                raise
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        if check:
            result.check_returncode()
        return result

    def socket(self, family: int = AF_INET, type: int = SOCK_STREAM, proto: int = 0) -> Any:  # noqa: A002
        """A `socket.socket` on this node's stack (nodes/api.py), reaching its kernel over the syscall socket."""
        from nodes import api

        cluster = self.emulation.cluster
        if cluster is not None and not cluster.is_local(self.name):
            from .remote_socket import RemoteSocket  # a node of another machine: through its agent

            return RemoteSocket(cluster.relay_caller(self.name, "socket_call"), self.name, family, type, proto)
        return api.socket(self.site().syscall, family, type, proto)


class LinkHandle:
    """One port of a bus device (an attachment, or one end of a segment link)."""

    def __init__(self, emulation: "Emulation", device: str, port: str) -> None:
        # across machines, a port lives on its own machine's device of the segment
        device = (getattr(emulation.plan, "port_owner", None) or {}).get(port, device)
        self.emulation = emulation
        self.device = device
        self.port = port

    def __repr__(self) -> str:
        return f"<LinkHandle {self.device}[{self.port}]>"

    def set(self, **params: Any) -> dict[str, Any]:
        """Change link parameters at run time (`delay="10ms"`, `loss="1%"`, `rate="10Mbit"`...).

        Values take the same units as the topology file (a bare loss is a
        percentage, as in netem); setting a parameter to 0 removes it.
        """
        canonical = parse_link_params(params)
        return self.emulation.supervisor.call(self.device, "set_port", port=self.port, **canonical)

    def up(self) -> None:
        self.set(up=True)

    def down(self) -> None:
        self.set(up=False)

    def stats(self) -> dict[str, Any]:
        return self.emulation.supervisor.call(self.device, "stats")["ports"][self.port]
