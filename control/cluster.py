"""The controller's side of a cluster emulation: Ray, the machines, and their agents.

Before changing this file, read docs/cluster.md, control/cluster_agent.py (the agent
this module creates, one per machine) and control/supervisor.py (which drives the
agents through `ClusterZygote` exactly as it drives a local zygote).

* `ClusterSession` attaches to a running Ray cluster (`ray.init(address=...)`, or
  reuses the process's connection), refuses one without token authentication unless
  told `insecure`, lists its nodes as `RayNodeInfo` (the placement's view of a
  machine), and starts one `HostAgent` actor per machine used, pinned there by node
  affinity, named so that `netemu down` and `netemu exec` of another process find them.
* `ClusterZygote` gives the supervisor the interface of `ZygoteClient`: `spawn` and
  `kill` requests go to the agent of the process's machine (`config["machine"]`),
  and one thread per agent long-polls its `events`: child exits, with their logs'
  last lines, arrive as from a local zygote. An agent that dies (Ray's actor death
  error) or stays silent for AGENT_SILENCE seconds is a lost machine: each of its
  processes is reported dead at once, and the rest keeps running.

Ray is imported only inside functions: single-machine use never imports it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .cluster_agent import AGENT_NAMESPACE, HostAgent, agent_name
from .placement import RayNodeInfo
from .zygote_client import ZygoteError

log = logging.getLogger(__name__)

AGENT_SILENCE = 1.25     # s past a long poll's end with no answer: the machine is lost (at most 1.5 s after)
EVENTS_POLL = 0.25       # s each `events` long poll waits at the agent
AGENT_CONCURRENCY = 16   # threads of an agent actor for spawns, kills, files
# Each running remote program holds an exec thread in its long poll: their own group, so that the
# events poll (its own group too) never queues behind them (Ray concurrency groups).
CONCURRENCY_GROUPS = {"events": 2, "exec": 64, "sockets": 32}


class ClusterError(RuntimeError):
    """The cluster cannot run this emulation (no Ray, no token authentication, an agent failed)."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ClusterError("running across machines needs Ray: pip install 'netemu[cluster]'") from exc
    return ray


def token_auth_enabled() -> bool:
    """Whether this process speaks to Ray with token authentication (RAY_AUTH_MODE=token)."""
    with contextlib.suppress(ImportError):
        from ray._private.authentication.authentication_utils import is_token_auth_enabled

        return bool(is_token_auth_enabled())
    return False


# Whether a Ray cluster demands a token, asked of its GCS by a process that holds none (Ray reads
# RAY_AUTH_MODE and the token once per process, so only a fresh interpreter can ask without them):
# AuthenticationError means it does. Exit codes: 0 no auth, 3 token required, 4 unreachable.
_GCS_PROBE = """
import sys
try:
    from ray._raylet import GcsClient
    GcsClient(address=sys.argv[1]).internal_kv_get(b"netemu-probe", None, timeout=10)
except Exception as error:
    sys.exit(3 if type(error).__name__ == "AuthenticationError" else 4)
"""


class TokenProbe:
    """Whether the cluster's GCS refuses a client without a token, asked by a subprocess holding none
    (HOME an empty dir: no ~/.ray/auth_token either). It runs while the agents start (`result()`
    waits): about 0.4 s of interpreter and Ray import that would otherwise delay every start-up."""

    def __init__(self, gcs_address: str) -> None:
        self._home = tempfile.TemporaryDirectory(prefix="netemu-probe-")
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_TOKEN")}
        env.update(RAY_AUTH_MODE="disabled", HOME=self._home.name)
        self._process = subprocess.Popen([sys.executable, "-c", _GCS_PROBE, gcs_address], env=env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def result(self, timeout: float = 60.0) -> bool | None:
        """True: the cluster demands a token; False: it lets anyone in; None: it could not be asked."""
        try:
            code = self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
            code = None
        self._home.cleanup()
        return {0: False, 3: True}.get(code) if code is not None else None

    def cancel(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self.result()


def gcs_refuses_our_token(gcs_address: str) -> bool:
    """A fresh process with our token asks the GCS: refused in a second, where ray.init retries for
    twenty before a ConnectionError that does not say why."""
    try:
        code = subprocess.run([sys.executable, "-c", _GCS_PROBE, gcs_address], timeout=60,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    except subprocess.TimeoutExpired:
        return False
    return code == 3


@dataclass
class AgentRef:
    """One machine's agent as the controller holds it."""

    index: int
    info: RayNodeInfo
    actor: Any
    started: dict[str, Any] = field(default_factory=dict)
    lost: str | None = None


class ClusterSession:
    """A connection to a Ray cluster, for one emulation."""

    def __init__(self, address: str, *, insecure: bool = False) -> None:
        self.address = address
        self.insecure = insecure
        self.ray = import_ray()
        self._owns_connection = False
        self._probe: TokenProbe | None = None
        self.agents: dict[int, AgentRef] = {}

    def connect(self) -> ClusterSession:
        ray = self.ray
        if not ray.is_initialized():
            if self.address != "auto" and token_auth_enabled() and gcs_refuses_our_token(self.address):
                raise ClusterError(f"the Ray cluster at {self.address} refused our token: RAY_AUTH_TOKEN (or "
                                   "RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token) must be the cluster's")
            try:
                ray.init(address=self.address, namespace=AGENT_NAMESPACE, log_to_driver=False,
                         logging_level=logging.WARNING, configure_logging=False)
            except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; all mean "not attached"
                raise ClusterError(f"cannot attach to the Ray cluster at {self.address}: {exc}") from exc
            self._owns_connection = True
        if not self.insecure:
            if not token_auth_enabled():
                self._refuse_unauthenticated()
            # A driver holding a token connects to a cluster without authentication too: ask the
            # cluster, while the agents start; `verify_authentication()` waits for the answer.
            self._probe = TokenProbe(ray.get_runtime_context().gcs_address)
        return self

    def verify_authentication(self) -> None:
        """Before anything of the emulation runs: refuse a cluster without token authentication."""
        probe, self._probe = self._probe, None
        if probe is not None and probe.result() is not True:
            self.stop_agents()
            self._refuse_unauthenticated()

    def _refuse_unauthenticated(self) -> None:
        self.close()
        raise ClusterError(f"the Ray cluster at {self.address} is not using token authentication "
                           "(start it with RAY_AUTH_MODE=token, see docs/cluster.md); --insecure runs on it "
                           "anyway")

    def nodes(self) -> list[RayNodeInfo]:
        """The live Ray nodes, in a stable order: by IP address, then custom resource names, then id."""
        found = []
        for node in self.ray.nodes():
            if not node.get("Alive"):
                continue
            found.append(RayNodeInfo(node_id=node["NodeID"], ip=node["NodeManagerAddress"],
                                     resources=dict(node.get("Resources") or {}),
                                     hostname=node.get("NodeManagerHostname", "")))
        return sorted(found, key=lambda n: (n.ip, sorted(custom_resources(n)), n.node_id))

    def start_agents(self, emulation: str, machines: dict[int, RayNodeInfo], *, detached: bool,
                     preload: list[str], hosts: str, timeout: float = 60.0) -> dict[int, AgentRef]:
        """One agent per machine used; returns when each has started its zygote."""
        ray = self.ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        remote_agent = ray.remote(concurrency_groups=CONCURRENCY_GROUPS)(HostAgent)
        run_base = os.environ.get("NETEMU_RUN_DIR")
        for index, info in sorted(machines.items()):
            options: dict[str, Any] = {
                "name": agent_name(emulation, index), "namespace": AGENT_NAMESPACE,
                "scheduling_strategy": NodeAffinitySchedulingStrategy(info.node_id, soft=False),
                "max_concurrency": AGENT_CONCURRENCY, "num_cpus": 0, "max_restarts": 0,
            }
            if detached:
                options["lifetime"] = "detached"
            # The agent starts its machine's share as it is created (run directory, zygote booting).
            actor = remote_agent.options(**options).remote(emulation, index, run_base, preload=preload, hosts=hosts)
            self.agents[index] = AgentRef(index, info, actor)
        refs = {index: ref.actor.start.remote(preload, 1.0, hosts) for index, ref in self.agents.items()}
        for index, pending in refs.items():
            try:
                self.agents[index].started = ray.get(pending, timeout=timeout)
            except Exception as exc:  # noqa: BLE001
                self.stop_agents()
                raise ClusterError(f"the agent on {machines[index].ip} did not start: {exc}") from exc
        return self.agents

    def wait_zygotes(self, timeout: float = 60.0) -> None:
        """Each agent's zygote has started (`HostAgent.ready`): its pid joins `started`."""
        pending = {index: ref.actor.ready.remote() for index, ref in self.agents.items()}
        for index, ref in pending.items():
            try:
                self.agents[index].started.update(self.ray.get(ref, timeout=timeout))
            except Exception as exc:  # noqa: BLE001
                raise ZygoteError(f"machine {index} ({self.agents[index].info.ip}): {exc}") from exc

    def call(self, index: int, method: str, *args: Any, timeout: float = 30.0, **kwargs: Any) -> Any:
        """One method of machine `index`'s agent, waited for."""
        ref = self.agents[index]
        if ref.lost is not None:
            raise ClusterError(f"machine {index} ({ref.info.ip}) is lost: {ref.lost}")
        group = {"exec_call": "exec", "socket_call": "sockets"}.get(method)
        call = getattr(ref.actor, method)
        if group is not None:
            call = call.options(concurrency_group=group)
        return self.ray.get(call.remote(*args, **kwargs), timeout=timeout)

    def stop_agents(self, grace: float = 0.5, timeout: float = 10.0) -> list[int]:
        """Every agent stops its processes and ends; the pids it found left over."""
        ray = self.ray
        leftovers: list[int] = []
        if not ray.is_initialized():
            return leftovers  # detached already: the agents' job ended with the connection
        pending = {index: ref.actor.stop.remote(grace) for index, ref in self.agents.items() if ref.lost is None}
        for index, ref in pending.items():
            try:
                leftovers += ray.get(ref, timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - a dead agent took its processes with it
                log.debug("machine %d: stop: %s", index, exc)
        for ref in self.agents.values():
            with contextlib.suppress(Exception):
                ray.kill(ref.actor, no_restart=True)
            ref.lost = ref.lost or "stopped"
        return leftovers

    def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None
        if self._owns_connection and self.ray.is_initialized():
            self.ray.shutdown()
        self._owns_connection = False


def custom_resources(node: RayNodeInfo) -> list[str]:
    """The resources a user gave a Ray node (`ray start --resources`), not Ray's own."""
    builtin = ("CPU", "GPU", "memory", "object_store_memory", "accelerator_type:")
    return [name for name in node.resources
            if not name.startswith(builtin) and not name.startswith("node:")]


def kill_named_agents(address: str, emulation: str, count: int, *, insecure: bool = True) -> int:
    """`netemu down` of an emulation whose controller is gone: remove its detached agents."""
    session = ClusterSession(address, insecure=insecure).connect()
    killed = 0
    try:
        for index in range(count):
            with contextlib.suppress(ValueError):
                actor = session.ray.get_actor(agent_name(emulation, index), namespace=AGENT_NAMESPACE)
                with contextlib.suppress(Exception):
                    session.ray.get(actor.stop.remote(0.5), timeout=10.0)
                session.ray.kill(actor, no_restart=True)
                killed += 1
    finally:
        session.close()
    return killed


class _RayPending:
    """A spawn or kill on its way to an agent (the `_Pending` of ZygoteClient)."""

    def __init__(self, finish: Callable[[float], dict]) -> None:
        self._finish = finish
        self._reply: dict | None = None

    def wait(self, timeout: float) -> dict:
        if self._reply is None:
            self._reply = self._finish(timeout)
        if not self._reply.get("ok"):
            raise ZygoteError(self._reply.get("error") or "failed")
        return self._reply


class ClusterZygote:
    """The supervisor's zygote for a cluster emulation: one agent per machine behind it."""

    process = None  # no local zygote process

    def __init__(self, session: ClusterSession, on_exit: Callable[..., None], on_lost: Callable[[], None]) -> None:
        self.session = session
        self.on_exit = on_exit
        self.on_lost = on_lost
        self.preload_failures: dict[str, str] = {}
        self._lock = threading.Lock()
        self._live: dict[int, set[int]] = {index: set() for index in session.agents}
        self._early: dict[str, dict] = {}   # exits seen before their spawn's reply was handled
        self._known: set[str] = set()
        self._batches: dict[int, dict[str, Any]] = {}  # per machine: {"specs" not sent yet, "ref": None}
        self._stopping = False
        self._pumps: list[threading.Thread] = []
        self.lost_events: list[tuple[int, str, float]] = []  # (machine, why, when)

    @property
    def pid(self) -> int:
        return os.getpid()

    @property
    def gone(self) -> bool:
        return all(ref.lost is not None for ref in self.session.agents.values())

    def start(self, *_args: Any, **_kwargs: Any) -> None:
        """The agents' zygotes are up (they started while the controller planned); the event pumps run."""
        self.session.wait_zygotes()
        for index, ref in self.session.agents.items():
            self.preload_failures.update(ref.started.get("preload_failures") or {})
            pump = threading.Thread(target=self._pump, args=(index,), name=f"agent-{index}", daemon=True)
            pump.start()
            self._pumps.append(pump)

    def request(self, message: dict, on_reply: Callable[[dict], None] | None = None) -> _RayPending:
        op = message.get("op")
        if op == "spawn":
            # Spawns wait in a batch per machine until the first reply is waited for: the supervisor
            # asks for all of a group, then waits; one Ray call per machine, not one per process.
            machine = int(message["config"]["machine"])
            spec = {"name": message["config"]["name"], "target": message["target"], "config": message["config"]}
            with self._lock:
                batch = self._batches.setdefault(machine, {"specs": [], "ref": None})
                index = len(batch["specs"])
                batch["specs"].append(spec)

            def finish_spawn(timeout: float) -> dict:
                ref = self._flush(machine, batch)
                reply = self._result(ref, timeout, machine)
                reply = reply[index] if isinstance(reply, list) else reply
                if reply.get("ok"):
                    key = f"{machine}/{reply['pid']}"
                    reply = dict(reply, key=key)
                    if on_reply is not None:
                        on_reply(reply)
                    with self._lock:
                        self._known.add(key)
                        self._live[machine].add(reply["pid"])
                        early = self._early.pop(key, None)
                    if early is not None:
                        self._deliver(machine, early)
                return reply
            return _RayPending(finish_spawn)
        if op == "kill":
            machine = int(message.get("machine") or 0)
            ref = self._agent_call(machine, "kill", int(message["pid"]), int(message["sig"]))
            return _RayPending(lambda timeout: {"ok": bool(self._result(ref, timeout, machine))}
                               if not isinstance(ref, dict) else ref)
        return _RayPending(lambda timeout: {"ok": True})

    def call(self, message: dict, timeout: float = 5.0) -> dict:
        return self.request(message).wait(timeout)

    def wait_ready(self, handles: list[Any], timeout: float, ready: Callable[[int], None]) -> None:
        """The supervisor's readiness wait, done by each machine's agent over ipc (HostAgent.wait_ready):
        no CURVE handshake per process across the network. `ready(i)` for each handle that answers."""
        by_machine: dict[int, dict[str, int]] = {}
        for index, handle in enumerate(handles):
            by_machine.setdefault(int(handle.config["machine"]), {})[handle.name] = index
        pending = {}
        for machine, names in by_machine.items():
            endpoints = {name: handles[i].config["control_local"] for name, i in names.items()}
            pending[machine] = self._agent_call(machine, "wait_ready", endpoints, timeout)
        for machine, ref in pending.items():
            outcome = self._result(ref, timeout + 10.0, machine)
            for name in outcome.get("ready", []):  # none when the machine is lost (its exits are reported)
                ready(by_machine[machine][name])

    def _flush(self, machine: int, batch: dict[str, Any]) -> Any:
        """The one spawn_many of `batch`, sent when its first reply is waited for."""
        with self._lock:
            if self._batches.get(machine) is batch:
                del self._batches[machine]
            if batch["ref"] is None:
                batch["ref"] = self._agent_call(machine, "spawn_many", batch["specs"])
        return batch["ref"]

    def _agent_call(self, machine: int, method: str, *args: Any) -> Any:
        ref = self.session.agents.get(machine)
        if ref is None or ref.lost is not None:
            return {"ok": False, "error": f"machine {machine} is lost: {ref.lost if ref else 'unknown'}"}
        return getattr(ref.actor, method).remote(*args)

    def _result(self, ref: Any, timeout: float, machine: int) -> Any:
        if isinstance(ref, dict):
            return ref
        try:
            return self.session.ray.get(ref, timeout=timeout)
        except Exception as exc:  # noqa: BLE001
            return {"ok": False, "error": f"machine {machine}: {exc}"}

    def stop(self, grace: float = 0.5, timeout: float = 3.0) -> list[int]:
        self._stopping = True
        leftovers = self.session.stop_agents(grace, timeout + 5.0)
        for pump in self._pumps:
            pump.join(EVENTS_POLL + AGENT_SILENCE + 1.0)
        return leftovers

    def abandon(self) -> None:
        self._stopping = True
        self.session.stop_agents(0.2, 5.0)

    # -- the event pumps (one thread per agent) ------------------------------------------------

    def _pump(self, machine: int) -> None:
        ray = self.session.ray
        ref = self.session.agents[machine]
        while not self._stopping:
            try:
                events = ray.get(ref.actor.events.options(concurrency_group="events").remote(EVENTS_POLL),
                                 timeout=EVENTS_POLL + AGENT_SILENCE)
            except ray.exceptions.GetTimeoutError:
                self._lose(machine, f"its agent did not answer for {EVENTS_POLL + AGENT_SILENCE:g} s")
                return
            except Exception as exc:  # noqa: BLE001 - RayActorError, ActorDiedError, ActorUnavailableError
                if not self._stopping:
                    self._lose(machine, f"its agent died ({type(exc).__name__})")
                return
            for event in events:
                if event.get("zygote_lost"):
                    self._lose(machine, "its zygote died")
                    return
                key = f"{machine}/{event['pid']}"
                with self._lock:
                    if key not in self._known:
                        self._early[key] = event
                        continue
                self._deliver(machine, event)

    def _deliver(self, machine: int, event: dict) -> None:
        key = f"{machine}/{event['pid']}"
        with self._lock:
            self._known.discard(key)
            self._live[machine].discard(event["pid"])
        self.on_exit(key, event.get("returncode"), event.get("signal"), event.get("tail"))

    def _lose(self, machine: int, why: str) -> None:
        ref = self.session.agents[machine]
        if ref.lost is not None or self._stopping:
            return
        ref.lost = why
        self.lost_events.append((machine, why, time.monotonic()))
        log.warning("machine %d (%s) lost: %s; its processes are reported dead", machine, ref.info.ip, why)
        with self._lock:
            pids, self._live[machine] = sorted(self._live[machine]), set()
            for pid in pids:
                self._known.discard(f"{machine}/{pid}")
        line = f"machine {machine} ({ref.info.ip}) lost: {why}"
        for pid in pids:
            self.on_exit(f"{machine}/{pid}", None, int(signal.SIGKILL), [line])
        with contextlib.suppress(Exception):  # then: a silent agent must not come back half alive
            self.session.ray.kill(ref.actor, no_restart=True)
