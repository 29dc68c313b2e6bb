"""`sysctl` for a program on a node: the node kernel's knobs, as procps-ng's sysctl shows and sets them.

`sysctl NAME...`, `-n` (values only), `-N` (names only), `-q`, `-e` (ignore
unknown names), `-w NAME=VALUE` or `NAME=VALUE` alone, `-a`/`-A`/`-X` (all,
sorted), `-r PATTERN` with -a, `-p [FILE]` (NAME = VALUE lines, `#`/`;`
comments, `-` before a name ignores its errors). Names take dots or slashes
(`net/ipv4/ip_forward`). A knob of several values (`ip_local_port_range`)
prints them separated by a tab, as /proc/sys does. Errors as procps:
`sysctl: cannot stat /proc/sys/NAME: No such file or directory` and
`sysctl: setting key "NAME": Invalid argument`, exit 255.
"""
from __future__ import annotations

import re
import sys
from typing import Any, TextIO

from bus.transport import ControlError

from .common import Node, ToolExit, emit, option_cluster, run

USAGE = """Usage:
 sysctl [options] [variable[=value] ...]
Options:
  -a, --all            display all variables
  -n, --values         print only values of the given variable(s)
  -N, --names          print variable names without values
  -e, --ignore         ignore unknown variables errors
  -q, --quiet          do not echo variable set
  -w, --write          enable writing a value to variable
  -p, --load[=<file>]  read values from file
  -r, --pattern <expression>  select setting that match expression"""

LONG_OPTIONS = {"--all": "a", "--values": "n", "--names": "N", "--ignore": "e", "--quiet": "q", "--write": "w",
                "--load": "p", "--pattern": "r", "--help": "h", "--binary": "b"}
FAILED = 255


def main(argv: list[str] | None = None, *, node: Node | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    return run("sysctl", Sysctl(stderr).run, argv, node, stdout, stderr)


def dotted(name: str) -> str:
    """procps takes `net/ipv4/ip_forward` for `net.ipv4.ip_forward` (a name with a slash has no dots)."""
    return name.replace("/", ".") if "/" in name else name


def format_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "\t".join(str(part) for part in value)
    return str(value)


class Sysctl:
    def __init__(self, stderr: TextIO | None) -> None:
        self.stderr = stderr
        self.values_only = self.names_only = self.quiet = self.ignore = self.write = False
        self.binary = False
        self.status = 0

    def warn(self, message: str) -> None:
        print(f"sysctl: {message}", file=self.stderr if self.stderr is not None else sys.stderr)
        self.status = FAILED

    def run(self, argv: list[str], node: Node, out: TextIO) -> int:
        show_all, load, pattern = False, None, None
        names: list[str] = []
        words = list(argv)
        while words:
            word = words.pop(0)
            if word.startswith("--load="):
                load = word.split("=", 1)[1]
                continue
            letters = option_cluster(word, "anNeqwprhbAXo", LONG_OPTIONS)
            if letters is None:
                if word.startswith("-") and word != "-":
                    raise ToolExit(f"sysctl: invalid option -- '{word.lstrip('-')[:1]}'\n{USAGE}", 1)
                names.append(word)
                continue
            for letter in letters:
                if letter in "aAX":
                    show_all = True
                elif letter == "n":
                    self.values_only = True
                elif letter == "N":
                    self.names_only = True
                elif letter == "e":
                    self.ignore = True
                elif letter == "q":
                    self.quiet = True
                elif letter == "w":
                    self.write = True
                elif letter == "b":
                    self.binary = self.values_only = True
                elif letter == "p":
                    load = words.pop(0) if words and not words[0].startswith("-") else "/etc/sysctl.conf"
                elif letter == "r":
                    if not words:
                        raise ToolExit(f"sysctl: option requires an argument -- 'r'\n{USAGE}", 1)
                    pattern = words.pop(0)
                elif letter == "h":
                    emit(out, [USAGE])
                    return 0
        if load is not None:
            return self.load(node, out, load)
        if show_all:
            return self.show_all(node, out, pattern)
        if not names:
            raise ToolExit("sysctl: no variables specified\nTry `sysctl --help' for more information.", 1)
        for name in names:
            if "=" in name:
                key, _, value = name.partition("=")
                self.set(node, out, key, value)
            elif self.write:
                self.warn(f'"{name}" must be of the form name=value')
            else:
                self.show(node, out, name)
        return self.status

    def line(self, name: str, value: Any) -> str:
        if self.names_only:
            return name
        if self.values_only:
            return format_value(value)
        return f"{name} = {format_value(value)}"

    def put(self, out: TextIO, text: str) -> None:
        out.write(text if self.binary else text + "\n")

    def show_all(self, node: Node, out: TextIO, pattern: str | None) -> int:
        matcher = re.compile(pattern) if pattern else None
        knobs = node.call("sysctl")
        for name in sorted(knobs):
            if matcher is None or matcher.search(name):
                self.put(out, self.line(name, knobs[name]))
        return self.status

    def show(self, node: Node, out: TextIO, name: str) -> None:
        key = dotted(name.strip())
        try:
            value = node.call("sysctl", name=key)
        except ControlError as error:
            if not self.ignore:
                self.warn(self.unknown(key, error))
            return
        self.put(out, self.line(key, value))

    def set(self, node: Node, out: TextIO, name: str, value: str, tolerant: bool = False) -> None:
        key = dotted(name.strip())
        value = value.strip()
        if not key:
            self.warn(f'malformed setting "{name}={value}"')
            return
        try:
            node.call("sysctl", name=key, value=value)
        except ControlError as error:
            if tolerant or self.ignore and "unknown sysctl" in str(error):
                return
            self.warn(self.unknown(key, error) if "unknown sysctl" in str(error)
                      else f'setting key "{key}": Invalid argument')
            return
        if not self.quiet:
            # procps echoes the value as it was written, not as the kernel stored it.
            self.put(out, self.line(key, value))

    @staticmethod
    def unknown(key: str, error: ControlError) -> str:
        if "unknown sysctl" in str(error):
            return f"cannot stat /proc/sys/{key.replace('.', '/')}: No such file or directory"
        return f"reading key \"{key}\": {error}"

    def load(self, node: Node, out: TextIO, path: str) -> int:
        """`sysctl -p FILE`: `NAME = VALUE` lines; `-NAME = VALUE` ignores a failure of that line."""
        try:
            handle = sys.stdin if path == "-" else open(path, encoding="utf-8")
        except OSError as error:
            raise ToolExit(f"sysctl: cannot open \"{path}\": {error.strerror}", FAILED) from None
        with handle:
            for number, raw in enumerate(handle, 1):
                text = raw.strip()
                if not text or text[0] in "#;":
                    continue
                tolerant = text.startswith("-")
                name, equals, value = text.lstrip("-").partition("=")
                if not equals:
                    self.warn(f"{path}({number}): invalid syntax, continuing...")
                    continue
                self.set(node, out, name, value, tolerant=tolerant)
        return self.status


if __name__ == "__main__":
    sys.exit(main())
