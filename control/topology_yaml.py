"""YAML reading for topologies: plain values that remember their line numbers.

Before changing this file, read the PyYAML composer/constructor docs and the
YAML 1.2 core schema (section 10.3): we resolve scalars closer to YAML 1.2
than PyYAML's default 1.1 so an unquoted MAC such as ``12:34:56:78:9a:bc``
is never read as a base-60 integer, nor ``2024-01-01`` as a date.

Mappings load as `LocatedMap` (a dict with the 1-based line of every key and
the keys that appeared twice, which PyYAML would silently overwrite),
sequences as `LocatedList` (a list with the line of every item). Scalars stay
plain Python values; their line is the line of the key or item holding them.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"


class LocatedMap(dict):
    """A mapping from YAML with the line of each key and its duplicate keys."""

    __slots__ = ("line", "key_lines", "duplicates")

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[Any, int] = {}
        # (key, line of the repeated key, line of the first one)
        self.duplicates: list[tuple[Any, int, int]] = []

    def line_of(self, key: Any) -> int:
        """Line of `key`, or of the mapping itself when the key is absent."""
        return self.key_lines.get(key, self.line)


class LocatedList(list):
    """A sequence from YAML with the line of each item."""

    __slots__ = ("line", "item_lines")

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if 0 <= index < len(self.item_lines) else self.line


class UnhashableKey(Exception):
    """A mapping key that is itself a mapping or sequence (``? [a, b] : 1``)."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _Loader(yaml.SafeLoader):
    """SafeLoader building located containers and resolving scalars the YAML 1.2 way.

    The pure-Python parser on purpose: libyaml words its syntax errors
    differently, and `netemu check` output should not depend on how PyYAML
    was built (a 500-node file still loads in ~15 ms).
    """


# YAML 1.2 core schema ints and floats; dropping 1.1's sexagesimal forms
# (``1:30`` == 90) and timestamps. Booleans keep 1.1's yes/no/on/off, which
# read naturally for `up: off`.
_loader_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.yaml_implicit_resolvers = _loader_resolvers
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9]+|0x[0-9a-fA-F]+|0o[0-7]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if text.startswith("0o"):
        return int(text[2:], 8)
    return int(text, 0) if text.startswith("0x") else int(text, 10)


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> LocatedMap:
    result = LocatedMap(node.start_mark.line + 1)
    first_lines: dict[Any, int] = {}
    # Duplicates among the keys written here; keys brought in by a `<<` merge
    # may be overridden on purpose, so they are checked after this pass.
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            if key in first_lines:
                result.duplicates.append((key, line, first_lines[key]))
            else:
                first_lines[key] = line
        except TypeError:
            raise UnhashableKey(line) from None
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise UnhashableKey(key_node.start_mark.line + 1) from None
        result[key] = loader.construct_object(value_node, deep=True)
        # The explicit key wins over a merged one, and so does its line.
        if key not in result.key_lines or key in first_lines:
            result.key_lines[key] = first_lines.get(key, key_node.start_mark.line + 1)
    return result


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> LocatedList:
    result = LocatedList(node.start_mark.line + 1)
    for item in node.value:
        result.append(loader.construct_object(item, deep=True))
        result.item_lines.append(item.start_mark.line + 1)
    return result


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


class YamlSyntaxError(Exception):
    """The text is not YAML; `line` is 1-based, `message` says what the parser saw."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"{line}: {message}")
        self.line = line
        self.message = message


def load_located(text: str) -> Any:
    """Parse one YAML document into located containers; raises `YamlSyntaxError`."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except UnhashableKey as error:
        raise YamlSyntaxError(error.line, "a mapping key must be a plain value, not a mapping or list") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 1
        context = error.context
        # The parser notices a missing bracket where it trips, often lines later: say where it opened.
        if context and error.context_mark is not None and error.context_mark.line + 1 != line:
            context += f" (opened at line {error.context_mark.line + 1})"
        parts = [part for part in (context, error.problem) if part]
        raise YamlSyntaxError(line, "YAML syntax: " + ", ".join(parts)) from None
    except yaml.YAMLError as error:
        raise YamlSyntaxError(1, f"YAML syntax: {error}") from None
    finally:
        loader.dispose()
