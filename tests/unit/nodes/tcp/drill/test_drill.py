"""Every script under scripts/ (not scripts/pending/: scripts the stack fails today, each
reported) runs against a fresh stack and must pass. See runner.py for the language."""
from __future__ import annotations

from pathlib import Path

import pytest

from .runner import run_file

SCRIPTS = Path(__file__).parent / "scripts"
PASSING = sorted(SCRIPTS.glob("*.pkt"))


@pytest.mark.parametrize("script", PASSING, ids=[path.stem for path in PASSING])
def test_script(script: Path) -> None:
    run_file(script)


def test_every_script_parses_pending_ones_too() -> None:
    from .parser import parse_file

    scripts = PASSING + sorted((SCRIPTS / "pending").glob("*.pkt"))
    assert len(scripts) >= 30
    for path in scripts:
        parse_file(path)
