"""Runs a parsed script against one stack (harness.Harness) and fails at the first event that
did not happen as written, with FILE:LINE, the expected and the actual segment.

Time: an event's time is absolute, or relative to the previous event's actual time (a `>`
segment's is when it left), as packetdrill's. Before an injection or a call at time T the
stack runs to T; every frame it sends on the way is unexpected. A `>` event waits for the next
frame the stack sends, which must leave within the tolerance (4 ms unless the script says
`--tolerance_usecs=N`) of its time, or inside its range A~B. A frame left after the last event
fails the script too: the script says everything the stack sends. A blocked call (calls.py)
retries as the stack runs; it must return before the next call, or at its `...B` end time.

Directives (`--name=value` lines): tolerance_usecs, mtu (eth0's), remote_isn (the peer's ISN,
to put the sequence wrap where a script wants it).

From a shell: `python -m tests.unit.nodes.tcp.drill [SCRIPT.pkt ...]` (see __main__.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nodes.wire.icmp import IcmpMessage
from nodes.wire.ipv4 import IPPROTO_ICMP, IPPROTO_TCP, IPv4Header
from nodes.wire.tcp import ACK, TcpHeader

from .calls import Blocked, CallError, Calls, Done
from .harness import GATEWAY_IP, LOCAL_IP, REMOTE_IP, Harness
from .parser import CallEvent, Event, IcmpEvent, PacketEvent, Script, ScriptError, SysctlEvent, parse_file
from .segments import ICMP_CODES, Numbering, build_inbound, compare, compare_icmp, describe, pattern

DIRECTIVES = {"tolerance_usecs": 4000, "mtu": 1500, "remote_isn": 3_000_000_000}
FOREVER = 3600.0  # how long `*` waits for a segment


@dataclass(slots=True)
class PendingCall:
    event: Event
    blocked: Blocked
    returns_at: float | None  # the script's A...B end, if it gave one


class Runner:
    """One script's run: its stack, the numbering of its connection, its fds and blocked calls."""

    def __init__(self, script: Script) -> None:
        self.script = script
        settings = dict(DIRECTIVES)
        for name, value in script.directives.items():
            if name not in DIRECTIVES:
                raise ScriptError(script.path, 0, f"unknown directive --{name} ({', '.join(DIRECTIVES)})")
            try:
                settings[name] = int(value)
            except ValueError:
                raise ScriptError(script.path, 0, f"--{name}={value}: not a number") from None
        self.tolerance = settings["tolerance_usecs"] / 1e6
        # sysctls before the first timed event configure the stack as it is built
        self.events = list(script.events)
        knobs: dict[str, object] = {}
        while self.events and isinstance(self.events[0].body, SysctlEvent):
            knobs.update(_knob_values(self.events.pop(0).body))
        try:
            self.harness = Harness(knobs, mtu=settings["mtu"])
        except Exception as error:
            raise ScriptError(script.path, 1, f"cannot build the stack: {error}") from None
        self.numbering = Numbering(remote_isn=settings["remote_isn"])
        self.calls = Calls(self.harness.stack, self.numbering)
        self.pending: list[PendingCall] = []
        self.failure: ScriptError | None = None
        self.last_time = 0.0
        self.harness.on_step = self._retry_pending

    def fail(self, event: Event, message: str) -> ScriptError:
        return ScriptError(self.script.path, event.line, message)

    def run(self) -> None:
        for event in self.events:
            try:
                self._run(event)
            except ScriptError:
                raise
            except Exception as error:  # a bug in the stack: name the line that set it off
                raise self.fail(event, f"the stack raised {type(error).__name__}: {error}") from error
            if self.failure is not None:
                raise self.failure
            self._check_barrier(event)
        for call in list(self.pending):  # the script ends waiting for a call that has an end time
            if call.returns_at is not None:
                self.harness.advance(call.returns_at + self.tolerance)
                self._raise_failure()
                self._check_deadlines()
        if self.pending:
            call = self.pending[0]
            raise self.fail(call.event, f"{call.event.body.name}() never returned")
        if self.events:
            self._no_unexpected(self.events[-1], "after the last event")

    # ------------------------------------------------------------------ events

    def _time(self, event: Event) -> float:
        spec = event.time
        if spec.kind == "absolute":
            return spec.value
        if spec.kind == "relative":
            return self.last_time + spec.value
        return max(self.last_time, self.harness.time)

    def _end(self, event: Event, start: float) -> float | None:
        """The end of a range: `+B` after the start; else B on the start's own base, as
        packetdrill's `+.1...0.200` (returns 0.2 s after the previous event)."""
        spec = event.time
        if spec.end is None:
            return None
        if spec.end_relative:
            return start + spec.end
        return (self.last_time if spec.kind == "relative" else 0.0) + spec.end

    def _check_deadlines(self) -> None:
        for call in self.pending:
            if call.returns_at is not None and self.harness.time > call.returns_at + self.tolerance:
                raise self.fail(call.event, f"{call.event.body.name}() had not returned at {call.returns_at:.6f}")

    def _run(self, event: Event) -> None:
        body = event.body
        if isinstance(body, (PacketEvent, IcmpEvent)) and body.direction == ">":
            self._expect(event)
            return
        when = self._time(event)
        if when < self.harness.time - self.tolerance:
            raise self.fail(event, f"time {when:.6f} is before the previous event ({self.harness.time:.6f})")
        for call in list(self.pending):
            if call.returns_at is not None and call.returns_at < when:
                self.harness.advance(call.returns_at + self.tolerance)
                self._raise_failure()
                self._check_deadlines()
        if isinstance(body, CallEvent) and self.pending:
            call = self.pending[0]
            raise self.fail(call.event, f"{call.event.body.name}() had not returned by line {event.line}")
        self.harness.advance(when)
        self._raise_failure()
        self._check_deadlines()
        self._no_unexpected(event, f"before line {event.line}")
        returns_at = self._end(event, when)
        self.last_time = when
        if isinstance(body, PacketEvent):
            header, payload = build_inbound(body, self.numbering)
            self.harness.inject_tcp(header, payload)
        elif isinstance(body, IcmpEvent):
            self._inject_icmp(event, body)
        elif isinstance(body, SysctlEvent):
            for name, value in _knob_values(body).items():
                self.harness.stack.sysctl.set(name, value)
        else:
            self._call(event, body, returns_at)

    def _check_barrier(self, event: Event) -> None:
        """Outside the test suite the stack swallows exceptions (its barrier counts them): fail on any."""
        stat = self.harness.stack.napi.stat
        if stat.rx_exceptions or stat.timer_exceptions:
            raise self.fail(event, f"the stack's exception barrier caught {stat.rx_exceptions} frame and "
                                   f"{stat.timer_exceptions} timer exceptions (see the log)")

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _no_unexpected(self, event: Event, where: str) -> None:
        if self.harness.sent:
            sent = self.harness.sent[0]
            raise ScriptError(self.script.path, event.line,
                              f"the stack sent a segment the script does not expect ({where}):\n"
                              f"  actual:   {describe(sent, self.numbering)}")

    def _expect(self, event: Event) -> None:
        body = event.body
        spec = event.time
        if spec.kind == "any":
            early, late = self.last_time, self.last_time + FOREVER
            expected = None
        else:
            expected = self._time(event)
            early, late = expected - self.tolerance, expected + self.tolerance
            if spec.separator == "~":
                late = self._end(event, expected) + self.tolerance
        self.harness.advance(late, stop_on_send=True)
        self._raise_failure()
        self._check_deadlines()
        if not self.harness.sent:
            raise self.fail(event, f"expected a segment by {late:.6f}, the stack sent nothing:\n"
                                   f"  expected: {event.text}")
        sent = self.harness.sent.popleft()
        if isinstance(body, PacketEvent):
            differences = compare(body, sent, self.numbering)
        else:
            differences = compare_icmp(body, sent)
        if not differences and sent.time < early:
            differences = [f"sent at {sent.time:.6f}, expected at {expected:.6f} (tolerance {self.tolerance:.3f} s)"]
        if differences:
            raise self.fail(event, "the segment sent differs from the script:\n"
                                   f"  expected: {event.text}\n  actual:   {describe(sent, self.numbering)}\n"
                            + "".join(f"  - {difference}\n" for difference in differences))
        self.last_time = sent.time

    def _inject_icmp(self, event: Event, body: IcmpEvent) -> None:
        numbering = self.numbering
        if body.quoted is not None:
            start, end = body.quoted
            seq = numbering.ours(start)
        else:
            start, end, seq = 0, 0, numbering.ours(0)
        segment = TcpHeader(numbering.local_port, numbering.remote_port, seq, numbering.theirs(0), ACK, 0)
        original = IPv4Header(src=LOCAL_IP, dst=REMOTE_IP, protocol=IPPROTO_TCP, dont_fragment=True).build(
            segment.build(pattern(start, end - start), int(LOCAL_IP), int(REMOTE_IP)))
        message = IcmpMessage.destination_unreachable(ICMP_CODES[body.code_name], original, body.mtu or 0)
        # a router on the path says the packet is too big; the peer says everything else
        source = GATEWAY_IP if body.code_name == "frag_needed" else REMOTE_IP
        self.harness.inject_ip(IPPROTO_ICMP, message.build(), src=source)

    # ------------------------------------------------------------------ calls

    def _call(self, event: Event, body: CallEvent, returns_at: float | None) -> None:
        harness = self.harness
        try:
            outcome = self.calls.call(body.name, body.args, lambda: harness.now)
        except CallError as error:
            raise self.fail(event, str(error)) from None
        if isinstance(outcome, Blocked):
            self.pending.append(PendingCall(event, outcome, returns_at))
            harness.settle()
            self._raise_failure()
            return
        self._check_return(event, outcome, harness.time, returns_at)
        harness.settle()
        self._raise_failure()

    def _retry_pending(self) -> bool:
        progressed = False
        for call in list(self.pending):
            outcome = call.blocked.retry()
            if outcome is None:
                continue
            self.pending.remove(call)
            progressed = True
            try:
                self._check_return(call.event, outcome, self.harness.time, call.returns_at)
            except ScriptError as failure:
                self.failure = self.failure or failure
        return progressed

    def _check_return(self, event: Event, outcome: Done, returned: float, returns_at: float | None) -> None:
        body = event.body
        got = f"{outcome.value}" + (f" {outcome.errno_name}" if outcome.errno_name else "")
        wanted = f"{body.result}" + (f" {body.errno_name}" if body.errno_name else "")
        if got != wanted:
            raise self.fail(event, f"{body.name}() returned {got}, expected {wanted}")
        if outcome.problem:
            raise self.fail(event, f"{body.name}(): {outcome.problem}")
        if returns_at is not None and abs(returned - returns_at) > self.tolerance:
            raise self.fail(event, f"{body.name}() returned at {returned:.6f}, expected at {returns_at:.6f}")


def _knob_values(body: SysctlEvent) -> dict[str, object]:
    values: dict[str, object] = {}
    for name, value in body.settings:
        parts = value.split(",") if "," in value else [value]
        try:
            numbers = [int(part) for part in parts]
            values[name] = numbers[0] if len(numbers) == 1 else tuple(numbers)
        except ValueError:
            values[name] = value
    return values


def run_file(path: "str | Path") -> None:
    """Parse and run one script; ScriptError (FILE:LINE and what differed) when it fails."""
    Runner(parse_file(path)).run()
