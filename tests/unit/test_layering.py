"""The layering of ARCHITECTURE.md rule 3, as import-linter contracts (pyproject.toml) plus the
user-side rule they cannot express yet: every import, TYPE_CHECKING ones included, points down."""
from __future__ import annotations

import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
# What the user side of a node (nodes.api: stdlib-like sockets; nodes.tools: ip, ss, sysctl)
# may never import: it talks to the node's kernel over its sockets only.
STACK_MODULES = ("nodes.kernel", "nodes.stack", "nodes.ipv4", "nodes.icmp", "nodes.udp", "nodes.tcp",
                 "nodes.neigh", "nodes.route", "nodes.nic", "nodes.skbuff", "nodes.socket", "nodes.syscalls",
                 "nodes.syscall_dispatch", "nodes.syscall_args", "nodes.trap", "nodes.trap_listener",
                 "nodes.trap_abi")


def test_import_linter_contracts_are_kept():
    """`lint-imports` with the contracts in pyproject.toml (run as make test runs it, from the root)."""
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                               "sys.exit(lint_imports_command())", "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_user_side_imports_no_stack_module():
    graph = grimp.build_graph("nodes", cache_dir=None)
    user_side = sorted(module for module in graph.modules
                       if module == "nodes.api" or module == "nodes.tools" or module.startswith("nodes.tools."))
    offending = [
        (source, target)
        for source in user_side
        for target in graph.find_modules_directly_imported_by(source)
        if any(target == stack or target.startswith(stack + ".") for stack in STACK_MODULES)
    ]
    assert offending == []


def test_the_contracts_name_every_module_of_nodes():
    """A new module of nodes/ must be placed in a layer (else the linter would not check it)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c.get("containers") == ["nodes"])
    placed = {name.strip().strip("()") for layer in contract["layers"] for name in layer.split("|")}
    modules = {info.name for info in pkgutil.iter_modules([str(ROOT / "nodes")])}
    assert sorted(modules - placed) == [], "place these modules of nodes/ in the layers contract"
