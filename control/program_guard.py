"""No orphans: finding, stopping and guarding every process of the programs started on nodes.

Before changing this file, read namespaces(7) and mount_namespaces(7), and the
"Teardown" section of docs/programs.md.

**How a program's processes are found.** Every program started on a node
(`control.programs`) runs in a private mount and UTS namespace of its own (for
the hosts file and the hostname), created between fork and exec. Every
descendant inherits both: children, shells, pipelines, and daemons that
double-fork, call setsid() or are reparented to init. So the processes of a
program are exactly the live processes whose /proc/PID/ns/mnt and ns/uts are the
program's pair (inode and device of the nsfs files), wherever they are in the
process tree. Process groups (bash job control makes new ones), the parent chain
(reparenting hides orphans from psutil's children(recursive=True)) and cgroups
(v1 here: no cgroup.kill; the freezer needs a hierarchy we would own) were
considered; the namespace pair is as robust as the freezer and needs nothing but
/proc. Escaping it takes setns()/unshare() of both namespaces (CAP_SYS_ADMIN):
a program that does so on purpose is not followed.

An nsfs inode number is reused once its namespace is gone, so a namespace is
only trusted while someone holds it open: the holder's guard keeps fds of the
program's ns/mnt and ns/uts until the program is over. (Teardown reads the
records while their holders and guards still run.)

**Who stops them.**
* Teardown of the emulation (`Emulation.stop`, so `netemu down`, Ctrl-C of
  `netemu up`, the pytest fixture): every program recorded in the run
  directory's `programs/` (one JSON record per program, whoever started it) is
  sent SIGTERM, the whole namespace; after a grace period SIGKILL, repeated until
  no member is left (a member forking meanwhile is found by the next scan).
* The holder ends normally: it stops its own programs (`ProgramTable`).
* The holder is killed outright (SIGKILL of `netemu exec`, of pytest): its guard
  notices. A guard is a small process of its own (this file run as a script, no
  project import, in a session of its own so no terminal signal reaches it) whose
  stdin is a SOCK_SEQPACKET socket from the holder. Each program announces itself
  there from its preexec, before it execs, with fds of its namespaces (so the guard
  holds them even if the holder dies right after the fork); the holder says when
  a program is over. EOF, which the kernel gives when the holder dies however it
  dies, makes the guard stop every program still listed, then exit.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Iterable

PROGRAMS_DIR = "programs"     # in the run directory: one record per running program
TERM_GRACE = 1.0              # SIGTERM, then this long before SIGKILL


@dataclass(frozen=True, slots=True)
class ProgramRecord:
    """What identifies a program's processes: its top pid and its namespace pair."""

    pid: int
    node: str
    argv: list[str]
    mnt: tuple[int, int]       # (st_dev, st_ino) of /proc/PID/ns/mnt
    uts: tuple[int, int]
    holder: int                # pid of the process that started it and holds its listener

    def as_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ProgramRecord":
        data = json.loads(text)
        return cls(int(data["pid"]), str(data["node"]), list(data["argv"]), tuple(data["mnt"]),
                   tuple(data["uts"]), int(data["holder"]))


def namespace_ids(pid: int | str) -> tuple[tuple[int, int], tuple[int, int]]:
    """(mnt, uts) of process `pid`, each as (st_dev, st_ino); OSError when it is gone."""
    mnt = os.stat(f"/proc/{pid}/ns/mnt")
    uts = os.stat(f"/proc/{pid}/ns/uts")
    return (mnt.st_dev, mnt.st_ino), (uts.st_dev, uts.st_ino)


def hold_namespaces(pid: int) -> list[int]:
    """Open fds on the namespaces of `pid`, so their inode numbers cannot be reused while held."""
    fds = []
    try:
        for kind in ("mnt", "uts"):
            fds.append(os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC))
    except OSError:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def _alive(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] not in (b"Z", b"X")


def members(records: Iterable[ProgramRecord]) -> dict[int, ProgramRecord]:
    """Every live process (zombies excluded) in the namespace pair of one of `records`."""
    wanted = {(record.mnt, record.uts): record for record in records}
    if not wanted:
        return {}
    me = os.getpid()
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            pair = namespace_ids(entry.name)
        except OSError:
            continue
        record = wanted.get(pair)
        if record is not None and _alive(entry.name):
            found[int(entry.name)] = record
    return found


def stop_programs(records: Iterable[ProgramRecord], grace: float = TERM_GRACE, timeout: float = 5.0) -> list[int]:
    """SIGTERM every process of `records`, SIGKILL what is left after `grace`; the pids that survived.

    Scans again until nothing is left, so a process forked meanwhile is caught.
    """
    records = list(records)
    if not records:
        return []
    for pid in members(records):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while members(records) and time.monotonic() < deadline:
        time.sleep(0.01)
    deadline = time.monotonic() + timeout
    while True:
        left = members(records)
        if not left or time.monotonic() > deadline:
            return sorted(left)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.005)


# -- the registry in the run directory -------------------------------------------------------


def record_path(run_dir: str, pid: int) -> str:
    return os.path.join(run_dir, PROGRAMS_DIR, f"{pid}.json")


def register(run_dir: str, record: ProgramRecord) -> None:
    """Write the record of a started program (atomically) so teardown finds it."""
    directory = os.path.join(run_dir, PROGRAMS_DIR)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    temporary = os.path.join(directory, f".{record.pid}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(record.as_json())
    os.replace(temporary, record_path(run_dir, record.pid))


def unregister(run_dir: str, pid: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record_path(run_dir, pid))


def registered(run_dir: str) -> list[ProgramRecord]:
    """Every program recorded in the run directory (records that do not parse are skipped)."""
    directory = os.path.join(run_dir, PROGRAMS_DIR)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    records = []
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as handle:
                records.append(ProgramRecord.from_json(handle.read()))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return records


def stop_registered(run_dir: str, grace: float = TERM_GRACE) -> list[int]:
    """Teardown: stop every program recorded in the run directory; the pids that survived."""
    records = registered(run_dir)
    survivors = stop_programs(records, grace)
    for record in records:
        unregister(run_dir, record.pid)
    return survivors


# -- the guard --------------------------------------------------------------------------------


class Guard:
    """The holder's side of a guard process (one per holder, started before its first program).

    The guard's stdin is a SOCK_SEQPACKET socket; we keep the other end. Each program
    announces itself from its own preexec, before exec (`announce`): one packet with
    its record and, by SCM_RIGHTS, fds of its two namespaces, so the guard holds them
    even when we are killed a moment after the fork. `remove` says a program is over.
    """

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__)], stdin=theirs.fileno(),
                                            stdout=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        finally:
            theirs.close()
        self.socket = ours
        self.holder = os.getpid()

    def announce(self, node: str, argv: list[str]) -> None:
        """In the program's child, after its namespaces are made and before exec: tell the guard."""
        fds = hold_namespaces(os.getpid())
        try:
            mnt, uts = [(os.fstat(fd).st_dev, os.fstat(fd).st_ino) for fd in fds]
            record = ProgramRecord(os.getpid(), node, argv, mnt, uts, self.holder)
            # MSG_NOSIGNAL: the child's SIGPIPE is back to its default here (subprocess restores it)
            socket.send_fds(self.socket, [json.dumps({"add": json.loads(record.as_json())}).encode()], fds,
                            socket.MSG_NOSIGNAL)
        finally:
            for fd in fds:
                os.close(fd)

    def remove(self, pid: int) -> None:
        with contextlib.suppress(OSError):
            self.socket.send(json.dumps({"remove": pid}).encode(), socket.MSG_NOSIGNAL)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        """Every program is stopped already: end the guard (EOF with nothing listed)."""
        self.socket.close()
        try:
            self.process.wait(5.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _forget_finished(listed: dict[int, tuple[ProgramRecord, list[int]]]) -> None:
    """Drop programs whose first process has ended and left no process behind (e.g. a failed exec)."""
    ended = [record for record, _ in listed.values() if not _alive(str(record.pid))]
    if not ended:
        return
    remaining = {(record.mnt, record.uts) for record in members(ended).values()}
    for record in ended:
        if (record.mnt, record.uts) not in remaining:
            for fd in listed.pop(record.pid)[1]:
                os.close(fd)


def guard_main() -> int:
    """Read add/remove packets until EOF, holding each program's namespaces; then stop what is listed."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_IGN)
    channel = socket.socket(fileno=0)
    listed: dict[int, tuple[ProgramRecord, list[int]]] = {}
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(channel, 65536, 2)
        except OSError:
            break
        if not data:
            break                 # EOF: the holder is gone, however it went
        try:
            message = json.loads(data)
        except ValueError:
            message = {}
        if "add" in message and len(fds) == 2:
            _forget_finished(listed)
            record = ProgramRecord.from_json(json.dumps(message["add"]))
            listed[record.pid] = (record, fds)
            continue
        for fd in fds:
            os.close(fd)
        if "remove" in message:
            _, held = listed.pop(int(message["remove"]), (None, []))
            for fd in held:
                os.close(fd)
    stop_programs([record for record, _ in listed.values()])
    return 0


if __name__ == "__main__":
    sys.exit(guard_main())
