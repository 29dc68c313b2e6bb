"""The house rule of issue 11: no source file in bus/, nodes/ or control/ over 600 lines.

A file past that has grown more than one responsibility: split it along them
(as supervisor/zygote, neigh, device and transport were split) instead of raising the limit.
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 600


def test_no_source_file_of_the_packages_is_over_600_lines():
    too_long = {}
    for package in ("bus", "nodes", "control"):
        for path in sorted((ROOT / package).rglob("*.py")):
            lines = path.read_text(encoding="utf-8").count("\n")
            if lines > LIMIT:
                too_long[str(path.relative_to(ROOT))] = lines
    assert too_long == {}, f"split these files along their responsibilities (limit {LIMIT} lines)"
