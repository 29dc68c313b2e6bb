"""What every tool shares: finding its node, calling its kernel, failing as the real tool would.

A tool finds its node through the environment `netemu exec`/`attach` set for
every program on a node: `NETEMU_CONTROL` (the kernel's control endpoint) and
`NETEMU_NODE` (its name, for messages). It connects lazily, on its first call,
so usage errors and `--help` work anywhere. A tool's body raises `ToolExit`
with the message and exit status the real tool would give; `run` prints it.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Mapping, Protocol, TextIO

from bus.transport import ControlClient, ControlError, ControlTimeout

# Long enough for a node busy with a flood of frames; a dead node is recognised sooner (no socket file).
CALL_TIMEOUT = 5.0


class ToolExit(Exception):
    """End the tool with `status`, printing `message` (if any) to stderr."""

    def __init__(self, message: str | None, status: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Node(Protocol):
    """What a tool needs of its node: `ControlClient.call`."""

    def call(self, op: str, /, **args: Any) -> Any: ...


class NodeConnection:
    """The node named by the environment, connected on the first call."""

    def __init__(self, tool: str, environ: Mapping[str, str] | None = None, timeout: float | None = None) -> None:
        self.tool = tool
        self.environ = os.environ if environ is None else environ
        self.timeout = CALL_TIMEOUT if timeout is None else timeout
        self._client: ControlClient | None = None

    @property
    def name(self) -> str:
        return self.environ.get("NETEMU_NODE") or "this node"

    def _connect(self) -> ControlClient:
        endpoint = self.environ.get("NETEMU_CONTROL")
        if not endpoint:
            raise ToolExit(f"{self.tool}: not on a netemu node (NETEMU_CONTROL is not set)", 1)
        if endpoint.startswith("ipc://") and not os.path.exists(endpoint[len("ipc://"):]):
            # ZeroMQ would wait for the socket to appear: say at once that nobody is there.
            raise ToolExit(f"{self.tool}: node {self.name} is not running (no control socket at "
                           f"{endpoint[len('ipc://'):]})", 1)
        return ControlClient(endpoint, timeout=self.timeout)

    def call(self, op: str, /, **args: Any) -> Any:
        if self._client is None:
            self._client = self._connect()
        try:
            return self._client.call(op, **args)
        except ControlTimeout:
            raise ToolExit(f"{self.tool}: node {self.name} does not answer (no reply from "
                           f"{self._client.endpoint} within {self.timeout:g} s)", 1) from None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


Body = Callable[[list[str], Node, TextIO], int | None]


def run(tool: str, body: Body, argv: list[str] | None, node: Node | None = None,
        stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run a tool's `body(argv, node, stdout)`; its exit status, with ToolExit and lost nodes reported."""
    argv = sys.argv[1:] if argv is None else list(argv)
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    connection = NodeConnection(tool) if node is None else None
    try:
        return body(argv, node if node is not None else connection, stdout) or 0
    except ToolExit as exit_:
        if exit_.message:
            print(exit_.message, file=stderr)
        return exit_.status
    except ControlError as error:
        # An op failed in a way the tool did not map to the real tool's words: say what the node said.
        print(f"{tool}: {error}", file=stderr)
        return 1
    except BrokenPipeError:
        # `ip addr | head -1`: the reader left. Quietly, as a tool killed by SIGPIPE.
        _silence(stdout)
        return 141
    finally:
        if connection is not None:
            connection.close()


def _silence(stream: TextIO) -> None:
    """Point a stream whose reader has gone at /dev/null, so flushing at exit does not complain."""
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, descriptor)
    os.close(null)


def emit(out: TextIO, lines: list[str]) -> None:
    """Write lines of output, each ended by a newline."""
    if lines:
        out.write("\n".join(lines) + "\n")


def option_cluster(word: str, known: str, long_options: Mapping[str, str] | None = None) -> list[str] | None:
    """The letters of a cluster of short options (`-tuanp` -> t u a n p), or the one letter a long option
    of `long_options` stands for (`--all` -> a); None if the word is neither."""
    if long_options and word in long_options:
        return [long_options[word]]
    if not word.startswith("-") or word.startswith("--") or len(word) < 2:
        return None
    letters = list(word[1:])
    return letters if all(letter in known for letter in letters) else None
