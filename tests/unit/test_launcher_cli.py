import os
import signal
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


def _run_with_reader_gone(*argv: str) -> subprocess.CompletedProcess:
    """`netemu ARGV | head -0`, deterministically: the pipe's read end is closed before netemu writes."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, str(ROOT / "launcher.py"), *argv], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=30, cwd=ROOT)
    finally:
        os.close(write_end)


def test_a_verb_whose_reader_went_away_ends_quietly_with_the_sigpipe_status():
    result = _run_with_reader_gone("check", "topologies/two_lans.yaml")
    assert result.stderr == ""
    assert result.returncode == 128 + signal.SIGPIPE


def test_help_whose_reader_went_away_prints_no_traceback():
    result = _run_with_reader_gone("--help")
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr
