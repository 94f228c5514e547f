"""pharia's local platform on 127.0.0.1: `up` starts it, `down` stops exactly what `up` started.

`up` runs a Prefect server, the `pharia-process` work pool with a worker, the `pharia-pipeline/local`
and `pharia-data/local` deployments, an MLflow server over the workspace's SQLite store, and the
Streamlit dashboard. Each service runs in its own process group, logs to
$PHARIA_HOME/services/<name>.log and is recorded in $PHARIA_HOME/services/<name>.pid (+ <name>.json:
start time and command line, which `down` checks before it sends any signal, so a stale PID file can
never hit an unrelated process).
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# Run as a script, this folder is sys.path[0] and this file would shadow the standard library's
# `platform` for every later import (pydantic, uuid, ...); import from the repository root instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parents[1]))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import fcntl  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from concurrent.futures import Future, ThreadPoolExecutor  # noqa: E402

from infra.local import procs, services  # noqa: E402
from infra.local.services import HOST, Platform, Ports, Service  # noqa: E402
from pharia import environment  # noqa: E402
from pharia.workspace import Workspace  # noqa: E402

DEFAULT_UP_TIMEOUT_S = 180.0
DEFAULT_DOWN_TIMEOUT_S = 20.0
LOG_TAIL_LINES = 15


class PlatformError(RuntimeError):
    """`up` cannot continue; the message names the service and its log file."""


def _platform(configure: bool = False) -> Platform:
    """`up` sets the process environment its children inherit; `down`/`status` only read paths (and
    must not create a workspace where there is none)."""
    workspace = Workspace.from_env()
    if configure:
        environment.configure(workspace)
        environment.prepare_prefect_home()
    return Platform(workspace, Ports.from_env())


def _records(directory: Path) -> list[procs.ProcessRecord]:
    names = sorted({p.stem for p in directory.glob("*.pid")} | {p.stem for p in directory.glob("*.json")})
    found = [procs.ProcessRecord.read(directory, n) for n in names]
    return [r for r in found if r is not None]


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return "(no log written)"
    return "\n".join(f"    {line}" for line in text)


# ---------------------------------------------------------------------------------------- up
def _check_ports(p: Platform) -> None:
    busy = []
    for title, port, var in (
        ("Prefect server", p.ports.prefect, "PHARIA_PREFECT_PORT"),
        ("MLflow server", p.ports.mlflow, "PHARIA_MLFLOW_PORT"),
        ("Streamlit dashboard", p.ports.dashboard, "PHARIA_DASHBOARD_PORT"),
    ):
        if not procs.port_free(HOST, port):
            owner = procs.port_owner(port) or "a process this user cannot see"
            busy.append(f"port {port} for the {title} is already in use by {owner}; free it or set {var}")
    if busy:
        raise PlatformError("\n".join(busy))


def _start(service: Service, p: Platform) -> tuple[subprocess.Popen, procs.ProcessRecord]:
    log_path = p.log(service.name)
    with log_path.open("ab") as log:
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} pharia up: {service.title} =====\n".encode())
        log.flush()
        handle = subprocess.Popen(
            service.argv,
            cwd=services.REPO_ROOT,
            env=service.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: `down` signals the group, not just the leader
        )
    try:
        record = procs.record_of(service.name, handle.pid, service.argv, service.stop_signal, log_path)
    except ProcessLookupError as exc:
        raise PlatformError(f"{service.title} exited at once; see {log_path}:\n{_tail(log_path)}") from exc
    record.write(p.services_dir)
    return handle, record


def _wait_healthy(service: Service, handle: subprocess.Popen, log: Path, started: float, timeout_s: float) -> float:
    while True:
        if service.healthy():
            seconds = time.monotonic() - started
            print(f"{service.title} healthy after {seconds:.1f} s")
            return seconds
        code = handle.poll()
        if code is not None:
            raise PlatformError(
                f"{service.title} exited with code {code} before it became healthy; see {log}:\n{_tail(log)}"
            )
        if time.monotonic() - started > timeout_s:
            raise PlatformError(
                f"{service.title} did not answer its health check within {timeout_s:g} s; see {log}:\n{_tail(log)}"
            )
        time.sleep(0.25)


def _raise_if_failed(pending: dict[str, Future[float]]) -> None:
    """Between the Prefect steps, surface a server that already died instead of after the deploy."""
    for future in pending.values():
        error = future.exception() if future.done() else None
        if error is not None:
            raise error


DATA_FLOW_NAME = "pharia-data"  # flows/data.py, deployed by flows/deploy.py next to the pipeline


def _deployments(output: str) -> dict[str, str]:
    """flows/deploy.py prints `<flow>/<name> <id>` per deployment (Prefect may log lines before)."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].count("/") == 1:
            found[parts[0]] = parts[1]
    return found


def _run_step(title: str, argv: list[str], env: dict[str, str], log: Path, timeout_s: float) -> str:
    """A one-off command of `up` (pool creation, deployment): output to its log, error with its tail."""
    with log.open("ab") as out:
        out.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} pharia up: {title} =====\n".encode())
        out.flush()
        try:
            done = subprocess.run(
                argv,
                cwd=services.REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=out,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise PlatformError(f"{title} did not finish within {timeout_s:g} s; see {log}") from None
        out.write(done.stdout)
    if done.returncode != 0:
        raise PlatformError(f"{title} failed (exit {done.returncode}); see {log}:\n{_tail(log)}")
    return done.stdout.decode(errors="replace").strip()


def up(args: argparse.Namespace) -> int:
    p = _platform(configure=True)
    p.workspace.ensure()
    p.services_dir.mkdir(parents=True, exist_ok=True)
    running = [r for r in _records(p.services_dir) if procs.is_ours(r)]
    if running:
        names = ", ".join(f"{r.name} (pid {r.pid})" for r in running)
        print(f"already running: {names}. Run `make down` first.", file=sys.stderr)
        return 1
    for stale in _records(p.services_dir):
        procs.ProcessRecord.remove(p.services_dir, stale.name)

    began = time.monotonic()
    started: list[procs.ProcessRecord] = []
    # Servers take 10-30 s each to answer; their health checks run in threads while the main thread
    # creates the pool, starts the worker and deploys as soon as the Prefect server is up.
    waits = ThreadPoolExecutor(max_workers=4, thread_name_prefix="health")
    try:
        _check_ports(p)
        pending: dict[str, Future[float]] = {}
        prefect_ready: Future[float] | None = None
        for service in services.servers(p):
            handle, record = _start(service, p)
            started.append(record)
            print(f"started {service.title} (pid {handle.pid}), log {p.log(service.name)}")
            future = waits.submit(_wait_healthy, service, handle, p.log(service.name), time.monotonic(), args.timeout)
            if service.name == "prefect-server":
                prefect_ready = future
            else:
                pending[service.name] = future
        assert prefect_ready is not None
        prefect_ready.result()
        _raise_if_failed(pending)
        if not services.pool_exists(p):
            _run_step(
                "work pool creation",
                services.create_pool_argv(),
                services.prefect_env(p),
                p.log("prefect-setup"),
                args.timeout,
            )
            print(f"created work pool {services.WORK_POOL} (type process)")

        _raise_if_failed(pending)
        worker = services.worker(p, since=time.time())
        handle, record = _start(worker, p)
        started.append(record)
        print(f"started {worker.title} (pid {handle.pid}), log {p.log(worker.name)}")
        pending[worker.name] = waits.submit(
            _wait_healthy, worker, handle, p.log(worker.name), time.monotonic(), args.timeout
        )

        _raise_if_failed(pending)
        deploy_script = services.REPO_ROOT / "flows" / "deploy.py"
        if args.no_deploy:
            print("skipping the deployment (--no-deploy)")
        elif not deploy_script.is_file():
            print(f"skipping the deployment: {deploy_script} does not exist yet")
        else:
            deployed = _run_step(
                "deployments", services.deploy_argv(), services.prefect_env(p), p.log("prefect-setup"), args.timeout
            )
            for deployment, deployment_id in _deployments(deployed).items():
                print(f"deployment {deployment} ready (id {deployment_id})")
        for future in pending.values():
            future.result()
    except BaseException as exc:  # whatever went wrong, leave nothing half-started behind
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        print(f"error: {reason}", file=sys.stderr)
        if started:
            print("stopping what was started ...", file=sys.stderr)
            _stop_all(p, DEFAULT_DOWN_TIMEOUT_S, quiet=False)
        if isinstance(exc, PlatformError | KeyboardInterrupt):
            return 1
        raise
    finally:
        waits.shutdown(wait=False, cancel_futures=True)  # health threads end once their process is gone

    print(f"\npharia platform up in {time.monotonic() - began:.1f} s")
    print(f"  Prefect UI   {p.prefect_url}")
    print(f"  MLflow UI    {p.mlflow_url}")
    print(f"  Dashboard    {p.dashboard_url}")
    print(f"  Logs and PID files in {p.services_dir}")
    print("\nTrigger the pipeline:")
    print(f"  Prefect UI -> Deployments -> {services.FLOW_NAME}/{services.DEPLOYMENT} -> Run (the form is the config)")
    print(
        f"  or: PREFECT_API_URL={p.prefect_api} {Path(sys.executable).parent / 'prefect'} "
        f"deployment run {services.FLOW_NAME}/{services.DEPLOYMENT}"
    )
    print(f"Data only (DVC stages, funnel artifact, no training): {DATA_FLOW_NAME}/{services.DEPLOYMENT}")
    print("Stop everything with `make down`.")
    return 0


# -------------------------------------------------------------------------------------- down
def _stop_all(p: Platform, timeout_s: float, quiet: bool) -> int:
    directory = p.services_dir
    if not directory.is_dir():
        if not quiet:
            print(f"nothing to stop: {directory} does not exist")
        return 0
    records = {r.name: r for r in _records(directory)}
    orphans = sorted({f.stem for f in directory.glob("*.pid")} - set(records))
    for name in orphans:
        pid = (directory / f"{name}.pid").read_text(errors="replace").strip()
        print(f"{name}: pid file ({pid}) without its record; not signalling an unverifiable process, removed it")
        procs.ProcessRecord.remove(directory, name)
    order = [n for n in services.STOP_ORDER if n in records] + sorted(set(records) - set(services.STOP_ORDER))
    if not order and not orphans:
        print(f"nothing to stop: no services recorded in {directory}")
    stopped = 0
    for name in order:
        result = procs.stop(records[name], timeout_s)
        print(result.message)
        stopped += result.stopped
        procs.ProcessRecord.remove(directory, name)
    return stopped


def down(args: argparse.Namespace) -> int:
    began = time.monotonic()
    stopped = _stop_all(_platform(), args.timeout, quiet=False)
    if stopped:
        print(f"stopped {stopped} service(s) in {time.monotonic() - began:.1f} s")
    return 0


# ------------------------------------------------------------------------------------ status
def status(args: argparse.Namespace) -> int:
    p = _platform()
    records = _records(p.services_dir) if p.services_dir.is_dir() else []
    if not records:
        print("not running (no services recorded)")
        return 1
    alive = 0
    for record in records:
        state = "running" if procs.is_ours(record) else "not running (stale record)"
        alive += state == "running"
        print(f"{record.name:16} pid {record.pid:<8} {state:28} log {record.log}")
    return 0 if alive == len(records) else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infra/local/platform.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "environment: PHARIA_HOME (workspace, default ./.pharia), PHARIA_PREFECT_PORT (4200), "
            "PHARIA_MLFLOW_PORT (5000), PHARIA_DASHBOARD_PORT (8501), PHARIA_UP_TIMEOUT (seconds)"
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up_cmd = commands.add_parser(
        "up",
        help="start every service and wait until each is healthy",
        description="Start the Prefect server, work pool, worker and deployment, the MLflow server and the "
        "dashboard on 127.0.0.1; refuse when a port is taken; undo a partial start on failure.",
    )
    up_cmd.add_argument(
        "--timeout",
        type=float,
        default=float(os.environ.get("PHARIA_UP_TIMEOUT") or DEFAULT_UP_TIMEOUT_S),
        help="seconds to wait for each service's health check, and for the pool/deployment commands "
        f"(default $PHARIA_UP_TIMEOUT or {DEFAULT_UP_TIMEOUT_S:g})",
    )
    up_cmd.add_argument("--no-deploy", action="store_true", help="do not create the pharia-pipeline/local deployment")
    up_cmd.set_defaults(run=up)
    down_cmd = commands.add_parser(
        "down",
        help="stop exactly what `up` started (idempotent)",
        description="Stop the recorded services: SIGINT to the worker, SIGTERM to the servers, SIGKILL after the "
        "timeout. A PID whose start time or command line no longer matches the record is left alone.",
    )
    down_cmd.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_DOWN_TIMEOUT_S,
        help=f"seconds to wait after the stop signal before SIGKILL (default {DEFAULT_DOWN_TIMEOUT_S:g})",
    )
    down_cmd.set_defaults(run=down)
    status_cmd = commands.add_parser("status", help="show which recorded services are running (exit 1 if not all)")
    status_cmd.set_defaults(run=status)
    return parser


@contextlib.contextmanager
def _exclusive(services_dir: Path, create: bool) -> Iterator[bool]:
    """One `up`/`down` at a time per workspace: two concurrent `up`s would both find the ports free.
    `down` in a workspace without services creates nothing."""
    if not create and not services_dir.is_dir():
        yield True
        return
    services_dir.mkdir(parents=True, exist_ok=True)
    with (services_dir / ".platform.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.run is status:
        return status(args)
    with _exclusive(Workspace.from_env().services_dir, create=args.run is up) as acquired:
        if not acquired:
            print(
                "another `up` or `down` is running for this workspace; try again when it has finished", file=sys.stderr
            )
            return 1
        return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
