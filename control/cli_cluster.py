"""The `netemu` verbs on an emulation that runs across machines (docs/cluster.md).

launcher.py hands over here when the state file of the emulation has a `cluster`
record (written by control/cluster_run.py): the Ray address, the agents' names, the
machines and what they hold, and the emulation's CURVE keys. With them another
process (`netemu status`, `exec`, `attach`, `capture`, `down`) reaches the
processes of every machine: control requests over tcp:// with the keys registered,
programs and files through the agent of the node's machine (by its Ray name).
`check --cluster` validates a topology's placement against a live cluster.
"""
from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bus import curve

from .cluster import ClusterError, ClusterSession
from .cluster_agent import AGENT_NAMESPACE

CAPTURES_FILE = "cluster-captures.json"  # in the controller's run directory: captures the CLI started


def cluster_record(info: Any) -> dict[str, Any] | None:
    """The `cluster` record of an emulation's state file, or None for a single-machine one."""
    record = (info.state or {}).get("cluster")
    return record if isinstance(record, dict) else None


@contextlib.contextmanager
def control_keys(info: Any) -> Iterator[None]:
    """Our control requests to this emulation's tcp:// endpoints carry its CURVE keys."""
    record = cluster_record(info) or {}
    keys = curve.CurveKeys.from_dict(record["keys"]) if record.get("keys") else None
    endpoints = [p.get("control", "") for p in ((info.state or {}).get("processes") or {}).values()]
    endpoints = [e for e in endpoints if curve.is_tcp(e)]
    if keys is not None:
        curve.register(endpoints, keys)
    try:
        yield
    finally:
        if keys is not None:
            curve.unregister(endpoints)


@contextlib.contextmanager
def attached(record: dict[str, Any]) -> Iterator[ClusterSession]:
    """Ray, for an emulation already running there: the cluster passed its checks when it started."""
    session = ClusterSession(record["address"], insecure=True).connect()
    try:
        yield session
    finally:
        session.close()


def _agent(session: ClusterSession, record: dict[str, Any], machine: int) -> Any:
    name = record["agents"][str(machine)]
    try:
        return session.ray.get_actor(name, namespace=record.get("namespace", AGENT_NAMESPACE))
    except ValueError as exc:
        raise ClusterError(f"the agent of machine {machine} ({name}) is gone") from exc


def machine_of(info: Any, process: str) -> int:
    record = ((info.state or {}).get("processes") or {}).get(process)
    if record is None or record.get("machine") is None:
        raise LookupError(f"{info.name} has no process {process!r}")
    return int(record["machine"])


def exec_or_attach(info: Any, node: str, command: list[str] | None, assignments: dict[str, str]) -> int:
    """`netemu exec NODE -- CMD` (command given) or `netemu attach NODE` on a cluster emulation."""
    from .remote_exec import attach_remote

    record = cluster_record(info)
    assert record is not None
    try:
        machine = machine_of(info, node)
        with attached(record) as session:
            agent = _agent(session, record, machine)

            def call(method: str, **kwargs: Any) -> Any:
                return session.ray.get(agent.exec_call.options(concurrency_group="exec").remote(method, kwargs),
                                       timeout=60)
            return attach_remote(call, node, command, assignments=assignments,
                                 verb="exec" if command else "attach")
    except (LookupError, ClusterError) as error:
        print(f"netemu: {'exec' if command else 'attach'}: {error}", file=sys.stderr)
        return 1


def status_rows(info: Any, names: list[str]) -> dict[str, str]:
    """The machine column of `netemu status`: each process's machine as `index (ip)`."""
    record = cluster_record(info) or {}
    machines = record.get("machines") or {}
    processes = (info.state or {}).get("processes") or {}
    shown = {}
    for name in names:
        machine = processes.get(name, {}).get("machine")
        ip = (machines.get(str(machine)) or {}).get("ip", "?")
        shown[name] = f"{machine} ({ip})" if machine is not None else "-"
    return shown


def capture(info: Any, segment: str, path: str | None, stop: bool) -> int:
    """`netemu capture SEGMENT -w FILE` / `--stop`: each machine's device of the segment writes its
    own pcap; --stop gathers them through the agents and merges them into FILE."""
    from .cluster_run import merge_pcaps
    from .emulation import call_concurrently

    record = cluster_record(info)
    assert record is not None
    devices = (record.get("segments") or {}).get(segment)
    if not devices:
        print(f"netemu: {info.name} has no segment {segment!r}", file=sys.stderr)
        return 1
    processes = (info.state or {}).get("processes") or {}
    machines = record.get("machines") or {}
    started_file = Path(info.path, CAPTURES_FILE)
    started = json.loads(started_file.read_text()) if started_file.exists() else {}
    with control_keys(info):
        if not stop:
            if path is None:
                print("netemu: capture: give -w FILE.pcap to start or --stop to stop", file=sys.stderr)
                return 2
            parts = {d: f"{machines[str(processes[d]['machine'])]['run_dir']}/{d}.pcap" for d in devices}
            replies = call_concurrently([(processes[d]["control"], "capture_start", {"path": parts[d]})
                                         for d in devices], 5.0)
            failed = [f"{d}: {r}" for d, r in zip(devices, replies) if isinstance(r, Exception)]
            if failed:
                print(f"netemu: capture: {'; '.join(failed)}", file=sys.stderr)
                return 1
            started[segment] = {"path": str(Path(path).resolve()), "parts": parts}
            started_file.write_text(json.dumps(started))
            print(f"capturing {segment} to {started[segment]['path']} (merged from {len(devices)} machines "
                  f"at --stop)")
            return 0
        if segment not in started:
            print(f"netemu: capture: {segment} has no capture started by `netemu capture`", file=sys.stderr)
            return 1
        call_concurrently([(processes[d]["control"], "capture_stop", {}) for d in devices], 5.0)
    entry = started.pop(segment)
    started_file.write_text(json.dumps(started))
    blobs = []
    with attached(record) as session:
        for device, remote in entry["parts"].items():
            agent = _agent(session, record, int(processes[device]["machine"]))
            data = session.ray.get(agent.read_file.remote(remote, True), timeout=60)
            if data is not None:
                blobs.append(data)
    frames = merge_pcaps(blobs, entry["path"])
    print(f"{segment}: {frames} frames in {entry['path']}")
    return 0


def remove_agents(info: Any) -> int:
    """`netemu down` of a cluster emulation whose supervisor died: its detached agents, by name."""
    from .cluster import kill_named_agents

    record = cluster_record(info)
    if record is None:
        return 0
    try:
        return kill_named_agents(record["address"], info.name, len(record.get("agents") or {}),
                                 insecure=bool(record.get("insecure")))
    except ClusterError as error:
        print(f"netemu: down: {error}", file=sys.stderr)
        return 0


def check(topology: Any, address: str, insecure: bool) -> int:
    """`netemu check TOPO --cluster ADDRESS`: the placement's problems, or where everything would go."""
    from .placement import PlacementError, place, placement_problems

    try:
        session = ClusterSession(address, insecure=insecure).connect()
    except ClusterError as error:
        print(f"netemu: check: {error}", file=sys.stderr)
        return 1
    try:
        session.verify_authentication()
        nodes = session.nodes()
    except ClusterError as error:
        print(f"netemu: check: {error}", file=sys.stderr)
        return 1
    finally:
        session.close()
    problems = placement_problems(topology, nodes)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    try:
        placement = place(topology, nodes)
    except PlacementError as error:
        print(f"{topology.source}: placement: {error}", file=sys.stderr)
        return 1
    print(f"placement on {len(nodes)} Ray nodes ({address}):")
    for index, node in enumerate(nodes):
        held = sorted(n for n, m in placement.machine_of.items() if m == index)
        segments = sorted(s for s, where in placement.segment_machines.items() if index in where)
        print(f"  {index}  {node.ip:<15} {len(held):>4} nodes  segments: {', '.join(segments) or '-'}")
    if placement.spread_segments:
        print(f"  spread over machines: {', '.join(placement.spread_segments)}; {placement.cut_links} links cut")
    return 0
