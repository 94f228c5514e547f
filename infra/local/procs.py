"""Process bookkeeping for `up`/`down`: what we started, proof that a PID is still that process,
and stopping a service with everything it spawned.

A PID alone is not an identity: after a reboot or a crash the number can belong to anyone, and
`down` must never signal a process it did not start. A record therefore keeps the kernel start
time (`/proc/<pid>/stat` field 22) and the command line; both must match before any signal is sent.
Linux only (reads /proc), which is what the local platform targets.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessRecord:
    """One started service: written as `<name>.pid` (the PID, for humans and shell tools) and
    `<name>.json` (this record, for `down`)."""

    name: str
    pid: int
    start_ticks: int
    cmdline: list[str]
    stop_signal: str
    log: str

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(directory / f"{self.name}.json", json.dumps(asdict(self), indent=2) + "\n")
        _atomic_write(directory / f"{self.name}.pid", f"{self.pid}\n")

    @classmethod
    def read(cls, directory: Path, name: str) -> ProcessRecord | None:
        path = directory / f"{name}.json"
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    @staticmethod
    def remove(directory: Path, name: str) -> None:
        for suffix in (".pid", ".json"):
            (directory / f"{name}{suffix}").unlink(missing_ok=True)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def record_of(name: str, pid: int, argv: list[str], stop_signal: signal.Signals, log: Path) -> ProcessRecord:
    """Record a just-started child. Right after fork the child still shows the parent's (or an
    empty) command line until its exec completes, so wait briefly for `argv` to appear."""
    deadline = time.monotonic() + 5.0
    while cmdline(pid) != argv and is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    ticks = start_ticks(pid)
    if ticks is None or not is_running(pid):
        raise ProcessLookupError(f"{name}: pid {pid} exited right after start; see {log}")
    return ProcessRecord(name, pid, ticks, cmdline(pid), stop_signal.name, str(log))


# ---------------------------------------------------------------------------------- /proc
def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (the command name in field 2 may contain spaces)."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def cmdline(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_running(pid: int) -> bool:
    """Exists and is not a zombie (an exited child waiting to be reaped is no longer running)."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def is_ours(record: ProcessRecord) -> bool:
    return (
        is_running(record.pid)
        and start_ticks(record.pid) == record.start_ticks
        and cmdline(record.pid) == list(record.cmdline)
    )


def _all_pids() -> list[int]:
    return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]


def process_tree(root: int) -> dict[int, int]:
    """`root`, its process group and every descendant, as pid → start ticks.

    The group catches helpers of the service; the descendant walk catches children that moved to a
    session of their own (Prefect starts each flow run in a new session so that a group-wide signal
    cannot reach it before the worker decides what to do with it).
    """
    parents: dict[int, int] = {}
    groups: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if not fields or fields[0] in ("Z", "X"):
            continue
        parents[pid], groups[pid], ticks[pid] = int(fields[1]), int(fields[2]), int(fields[19])
    tree = {pid for pid, group in groups.items() if group == root}
    if root in ticks:
        tree.add(root)
    frontier = set(tree)
    while frontier:
        children = {pid for pid, parent in parents.items() if parent in frontier and pid not in tree}
        tree |= children
        frontier = children
    return {pid: ticks[pid] for pid in tree if pid in ticks}


# --------------------------------------------------------------------------------- stopping
@dataclass(frozen=True)
class StopResult:
    name: str
    message: str
    stopped: bool


def stop(record: ProcessRecord, timeout_s: float = 15.0) -> StopResult:
    """Signal the service's whole tree with its stop signal, SIGKILL what is left after the timeout."""
    if not is_running(record.pid):
        return StopResult(record.name, f"{record.name}: not running (pid {record.pid} already exited)", False)
    if not is_ours(record):
        return StopResult(
            record.name,
            f"{record.name}: pid {record.pid} now belongs to another process ({' '.join(cmdline(record.pid))[:80]}); "
            "left it alone and removed the stale pid file",
            False,
        )
    began = time.monotonic()
    tree = process_tree(record.pid)
    sig = signal.Signals[record.stop_signal]
    _signal_group(record.pid, sig)
    _signal_each(tree, sig, skip_group=record.pid)
    left = _wait_gone(tree, timeout_s)
    how = sig.name
    if left:
        _signal_each(left, signal.SIGKILL, skip_group=None)
        left = _wait_gone(left, 5.0)
        how = f"{sig.name}, then SIGKILL after {timeout_s:g} s"
    elapsed = time.monotonic() - began
    if left:
        return StopResult(record.name, f"{record.name}: processes {sorted(left)} survived SIGKILL", False)
    return StopResult(
        record.name,
        f"stopped {record.name} (pid {record.pid}, {len(tree)} processes) with {how} in {elapsed:.1f} s",
        True,
    )


def _same(pid: int, ticks: int) -> bool:
    return is_running(pid) and start_ticks(pid) == ticks


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        if os.getpgid(pgid) == pgid:  # the leader is still the group's leader: the group is ours
            os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_each(targets: dict[int, int], sig: signal.Signals, skip_group: int | None) -> None:
    for pid, ticks in targets.items():
        if not _same(pid, ticks):
            continue
        try:
            if skip_group is not None and os.getpgid(pid) == skip_group:
                continue  # already reached through the group signal
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _wait_gone(targets: dict[int, int], timeout_s: float) -> dict[int, int]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = {pid: ticks for pid, ticks in targets.items() if _same(pid, ticks)}
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


# ------------------------------------------------------------------------------------ ports
def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on the port now. SO_REUSEADDR as the servers set it: without it,
    connections in TIME_WAIT from a just-stopped server would read as "in use" for a minute."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_owner(port: int) -> str | None:
    """`pid N (command)` of the process listening on `port`, when /proc lets us see it."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in _all_pids():
        try:
            links = {os.readlink(fd) for fd in (PROC / str(pid) / "fd").iterdir()}
        except OSError:
            continue
        if links & wanted:
            return f"pid {pid} ({' '.join(cmdline(pid))[:100]})"
    return None
