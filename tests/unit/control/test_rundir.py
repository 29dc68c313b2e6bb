"""Run directories: location, privacy, locking, stale cleanup, ipc path limits, state file."""
from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from control.rundir import (IPC_PATH_MAX, EmulationRunning, RunDir, RunDirError, check_ipc_path,
                            check_name, list_emulations, read_log_tail, run_base,
                            wait_unlocked)


@pytest.fixture
def base():
    root = tempfile.mkdtemp(prefix="ne-", dir="/tmp")
    try:
        yield Path(root) / "runs"  # not created yet: acquire makes it
    finally:
        shutil.rmtree(root, ignore_errors=True)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_base_is_netemu_run_dir_or_tmp_per_user(monkeypatch):
    monkeypatch.setenv("NETEMU_RUN_DIR", "/somewhere/else")
    assert run_base() == Path("/somewhere/else")
    monkeypatch.delenv("NETEMU_RUN_DIR")
    assert run_base() == Path(f"/tmp/netemu-{os.getuid()}")


def test_acquire_uses_netemu_run_dir_as_the_base(base, monkeypatch):
    monkeypatch.setenv("NETEMU_RUN_DIR", str(base))
    run_dir = RunDir.acquire("lab")
    try:
        assert run_dir.path == base / "lab"
    finally:
        run_dir.release()


def test_acquire_creates_private_directories_and_records_our_pid(base):
    old_umask = os.umask(0o022)
    try:
        run_dir = RunDir.acquire("lab", base=base)
    finally:
        os.umask(old_umask)
    try:
        assert (mode(base), mode(run_dir.path), mode(run_dir.log_dir)) == (0o700, 0o700, 0o700)
        assert json.loads((run_dir.path / "lock").read_text())["pid"] == os.getpid()
        assert mode(run_dir.path / "lock") == 0o600
        assert run_dir.log_path("h1") == run_dir.path / "log" / "h1.log"
        assert not run_dir.stale_cleaned
    finally:
        run_dir.release()


def test_release_removes_everything(base):
    run_dir = RunDir.acquire("lab", base=base)
    (run_dir.path / "h1.ctl").write_text("")
    run_dir.log_path("h1").write_text("hello\n")
    run_dir.write_state({"name": "lab"})
    run_dir.release()
    assert not run_dir.path.exists()
    assert not run_dir.locked
    run_dir.release()  # twice is harmless


def test_release_can_keep_the_logs(base):
    run_dir = RunDir.acquire("lab", base=base)
    (run_dir.path / "h1.ctl").write_text("")
    run_dir.log_path("h1").write_text("hello\n")
    run_dir.release(keep_logs=True)
    assert sorted(os.listdir(run_dir.path)) == ["log"]
    assert run_dir.log_path("h1").read_text() == "hello\n"


def test_same_name_is_refused_while_locked(base):
    first = RunDir.acquire("lab", base=base)
    try:
        with pytest.raises(EmulationRunning, match=rf"'lab' is already running \(supervisor pid {os.getpid()}"):
            RunDir.acquire("lab", base=base)
        assert first.locked and (first.path / "lock").exists()
    finally:
        first.release()
    again = RunDir.acquire("lab", base=base)  # free once released
    again.release()


def test_different_names_live_side_by_side(base):
    one = RunDir.acquire("one", base=base)
    two = RunDir.acquire("two", base=base)
    try:
        assert one.path != two.path
        assert [(e.name, e.alive) for e in list_emulations(base)] == [("one", True), ("two", True)]
    finally:
        one.release()
        two.release()
    assert list_emulations(base) == []


def test_stale_directory_without_a_live_lock_is_cleaned_and_reused(base):
    stale = base / "lab"
    (stale / "log").mkdir(parents=True)
    (stale / "lock").write_text(json.dumps({"pid": 999999999}))
    (stale / "h1.ctl").write_text("")
    (stale / "log" / "h1.log").write_text("old\n")
    (stale / "state.json").write_text(json.dumps({"processes": {"h1": {"pid": 999999999}}}))
    [info] = list_emulations(base)
    assert (info.name, info.alive, info.supervisor_pid) == ("lab", False, 999999999)
    assert info.state == {"processes": {"h1": {"pid": 999999999}}}

    run_dir = RunDir.acquire("lab", base=base)
    try:
        assert run_dir.stale_cleaned
        assert sorted(os.listdir(stale)) == ["lock", "log"]
        assert os.listdir(stale / "log") == []
        assert json.loads((stale / "lock").read_text())["pid"] == os.getpid()
    finally:
        run_dir.release()


def test_state_file_round_trips_and_is_private(base):
    run_dir = RunDir.acquire("lab", base=base)
    try:
        assert run_dir.read_state() is None
        run_dir.write_state({"name": "lab", "processes": {"h1": {"pid": 12}}})
        run_dir.write_state({"name": "lab", "processes": {"h1": {"pid": 13}}})
        assert run_dir.read_state() == {"name": "lab", "processes": {"h1": {"pid": 13}}}
        assert mode(run_dir.path / "state.json") == 0o600
        assert [e.state for e in list_emulations(base)] == [run_dir.read_state()]
    finally:
        run_dir.release()


def test_ipc_endpoint_checks_the_unix_socket_path_limit(base):
    run_dir = RunDir.acquire("lab", base=base)
    try:
        assert run_dir.ipc_endpoint("h1.ctl") == f"ipc://{run_dir.path}/h1.ctl"
        room = IPC_PATH_MAX - len(str(run_dir.path)) - 1
        assert run_dir.ipc_path("x" * room).endswith("x" * room)
        with pytest.raises(RunDirError, match=r"ipc socket path is 108 bytes, the limit is 107"):
            run_dir.ipc_endpoint("x" * (room + 1))
    finally:
        run_dir.release()


def test_check_ipc_path_counts_bytes_not_characters():
    with pytest.raises(RunDirError):
        check_ipc_path("/" + "é" * 60)  # 121 bytes in UTF-8
    assert check_ipc_path("/" + "e" * 106) == "/" + "e" * 106


def test_run_directory_too_long_for_socket_paths_is_refused_up_front(base):
    deep = base / ("d" * 90)
    with pytest.raises(RunDirError, match="too long for ipc socket paths"):
        RunDir.acquire("lab", path=deep)
    assert not deep.exists()


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "-x", ".hidden", "x" * 65, "sp ace"])
def test_bad_names_are_refused(name, base):
    with pytest.raises(RunDirError, match="invalid emulation name"):
        RunDir.acquire(name, base=base)


def test_good_names_are_accepted():
    assert check_name("two_lans-1.v2") == "two_lans-1.v2"


def test_someone_elses_default_base_is_refused(base, monkeypatch):
    # The default base sits in world-writable /tmp: it must be ours.
    monkeypatch.delenv("NETEMU_RUN_DIR", raising=False)  # the default base is what is checked
    base.mkdir(mode=0o755)
    monkeypatch.setattr("control.rundir.os.getuid", lambda: os.stat(base).st_uid + 1)
    monkeypatch.setattr("control.rundir.Path", _PathFor(base, os.stat(base).st_uid + 1))
    with pytest.raises(RunDirError, match="belongs to uid"):
        RunDir.acquire("lab")


class _PathFor:
    """Makes /tmp/netemu-<uid> resolve to the test's directory."""

    def __init__(self, target: Path, uid: int) -> None:
        self.target, self.fake = target, f"/tmp/netemu-{uid}"

    def __call__(self, *parts):
        path = Path(*parts)
        return self.target if str(path) == self.fake else path


def test_wait_unlocked_sees_a_release(base):
    run_dir = RunDir.acquire("lab", base=base)
    path = run_dir.path
    assert not wait_unlocked(path, 0.05)
    run_dir.release()
    assert wait_unlocked(path, 0.05)


def test_read_log_tail_returns_the_last_whole_lines(base):
    base.mkdir()
    log = base / "h1.log"
    assert read_log_tail(log) == []
    log.write_text("".join(f"line {i} " + "x" * 1000 + "\n" for i in range(100)))
    tail = read_log_tail(log, 20)
    assert [line.split()[1] for line in tail] == [str(i) for i in range(80, 100)]
    log.write_text("a\nb\n")
    assert read_log_tail(log) == ["a", "b"]
