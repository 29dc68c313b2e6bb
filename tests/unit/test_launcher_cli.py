import subprocess
import sys
from pathlib import Path

import launcher

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_verb_of_the_architecture():
    result = subprocess.run([sys.executable, str(ROOT / "launcher.py"), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for verb in ("up", "down", "status", "check", "attach", "exec", "capture", "graph"):
        assert f"  {verb} " in result.stdout


def test_unknown_verb_is_a_usage_error():
    result = subprocess.run([sys.executable, str(ROOT / "launcher.py"), "frobnicate"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
