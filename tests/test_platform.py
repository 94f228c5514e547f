"""`infra/local/platform.py up|down` for real: every service started on free ports with a workspace in
tmp_path, checked through its own health endpoint and API, then stopped with nothing left behind.

The module starts the platform once (≈ 30-40 s on 2 cores) and the tests read it in file order; the
last one stops it. Tests that need no running platform (port conflict, stale PID file) start none.
Startup time and memory are printed (`pytest -s`) because they are the numbers worth watching.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_dashboard import APP, MODEL, seed_store

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `infra` is not an installed package; bare `pytest` does not add the root
    sys.path.insert(0, str(REPO))

from infra.local import procs  # noqa: E402
from pharia.config import load_config  # noqa: E402
from pharia.registry import queries  # noqa: E402
from pharia.workspace import Workspace  # noqa: E402

PLATFORM = REPO / "infra" / "local" / "platform.py"
SERVICES = ("prefect-server", "mlflow-server", "dashboard", "prefect-worker")
PIPELINE_TIMEOUT_S = 1500


@dataclass(frozen=True)
class Running:
    home: Path
    env: dict[str, str]
    prefect: str
    mlflow: str
    dashboard: str
    up_output: str
    up_s: float


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _env(home: Path, ports: list[int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env |= {
        "PHARIA_HOME": str(home),
        "PHARIA_PREFECT_PORT": str(ports[0]),
        "PHARIA_MLFLOW_PORT": str(ports[1]),
        "PHARIA_DASHBOARD_PORT": str(ports[2]),
    }
    # DeepSpeed compiles an op on first use (minutes): reuse the caller's cache, not a fresh tmp one.
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".pharia" / "torch_extensions"))
    return env


def _platform(env: dict[str, str], *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PLATFORM), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def _get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _processes_of(home: Path) -> list[str]:
    """Every process whose environment names this workspace: the services and anything they spawned."""
    marker = f"PHARIA_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0") and procs.is_running(int(entry.name)):
                found.append(f"{entry.name}: {' '.join(procs.cmdline(int(entry.name)))[:120]}")
        except OSError:
            continue
    return found


def _rss_mib(pid: int) -> float:
    total = 0
    for member in procs.process_tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Running:
    home = tmp_path_factory.mktemp("platform") / "home"
    Workspace(home).ensure()
    seed_store(home)  # runs and a registered model made by the embedded SQLite default, before any server
    ports = _free_ports(3)
    env = _env(home, ports)
    began = time.monotonic()
    up = _platform(env, "up")
    running = Running(
        home=home,
        env=env,
        prefect=f"http://127.0.0.1:{ports[0]}",
        mlflow=f"http://127.0.0.1:{ports[1]}",
        dashboard=f"http://127.0.0.1:{ports[2]}",
        up_output=up.stdout,
        up_s=time.monotonic() - began,
    )
    try:
        assert up.returncode == 0, f"up failed:\n{up.stdout}\n{up.stderr}"
        yield running
    finally:
        _platform(env, "down")  # idempotent safety net; test_down_* checks the real thing


# ------------------------------------------------------------------------------- running
@pytest.mark.e2e
def test_up_starts_every_service_healthy(platform: Running) -> None:
    for url in (platform.prefect, platform.mlflow, platform.dashboard):
        assert url in platform.up_output
    assert _get(f"{platform.prefect}/api/health")[0] == 200
    assert _get(f"{platform.mlflow}/health") == (200, b"OK")
    assert _get(f"{platform.dashboard}/_stcore/health")[0] == 200
    services_dir = platform.home / "services"
    records = {name: procs.ProcessRecord.read(services_dir, name) for name in SERVICES}
    for name, record in records.items():
        assert record is not None and procs.is_ours(record), name
        assert (services_dir / f"{name}.pid").read_text().strip() == str(record.pid)
        assert (services_dir / f"{name}.log").stat().st_size > 0
        assert os.getpgid(record.pid) == record.pid  # its own process group
    assert _platform(platform.env, "status").returncode == 0
    memory = {name: round(_rss_mib(record.pid)) for name, record in records.items()}
    print(f"\nup took {platform.up_s:.1f} s; RSS MiB per service tree: {memory}, total {sum(memory.values())}")


@pytest.mark.e2e
def test_work_pool_worker_and_deployment_exist(platform: Running) -> None:
    status, body = _get(f"{platform.prefect}/api/work_pools/pharia-process")
    assert status == 200 and json.loads(body)["type"] == "process"
    workers = _post(f"{platform.prefect}/api/work_pools/pharia-process/workers/filter", {})
    assert any(w["name"] == "pharia-local-worker" for w in workers)
    if not (REPO / "flows" / "deploy.py").exists():
        pytest.skip("flows/deploy.py does not exist yet")
    status, body = _get(f"{platform.prefect}/api/deployments/name/pharia-pipeline/local")
    assert status == 200, "deployment pharia-pipeline/local is missing"
    deployment = json.loads(body)
    assert deployment["work_pool_name"] == "pharia-process"
    assert "config" in deployment["parameter_openapi_schema"]["properties"]


@pytest.mark.e2e
def test_mlflow_server_serves_artifacts_of_runs_made_without_it(platform: Running) -> None:
    """The seeded run's artifact_uri is file://$PHARIA_HOME/mlartifacts/...: the UI and REST API must
    list and download it, which depends on how the server's artifact root was chosen."""
    run_id = queries.list_versions(platform.mlflow, MODEL)[-1].run_id
    status, body = _get(f"{platform.mlflow}/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=compliance")
    assert status == 200
    assert {f["path"] for f in json.loads(body)["files"]} == {"compliance/compliance.json", "compliance/compliance.md"}
    status, body = _get(f"{platform.mlflow}/get-artifact?run_id={run_id}&path=compliance/compliance.json")
    assert status == 200 and json.loads(body)["schema"] == "pharia.compliance/v1"
    report = queries.load_compliance_report(platform.mlflow, MODEL, "1")
    assert report.source == f"runs:/{run_id}/compliance/compliance.json"


@pytest.mark.e2e
def test_dashboard_reads_through_the_mlflow_server(platform: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", platform.mlflow)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception
    assert at.dataframe[0].value.iloc[0]["model"] == MODEL
    at.switch_page("views/compliance.py")
    at.run()
    assert "Verdict: PASS" in at.success[0].value


@pytest.mark.e2e
def test_up_refuses_to_start_twice(platform: Running) -> None:
    again = _platform(platform.env, "up", timeout=60)
    assert again.returncode == 1 and "already running" in again.stderr


@pytest.mark.e2e
def test_pipeline_triggered_through_the_deployment_registers_a_model(
    platform: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not (REPO / "flows" / "pipeline.py").exists():
        pytest.skip("flows/pipeline.py does not exist yet: nothing to deploy")
    cfg = load_config("tiny").model_dump(mode="json")
    cfg["name"] = "e2e"
    cfg["data"]["target_chars"] = 300_000
    cfg["train"] |= {"max_steps": 6, "warmup_steps": 1, "log_every": 2, "global_batch_tokens": 512}
    cfg["train"]["stages"] = [{**stage, "max_steps": 3} for stage in cfg["train"]["stages"]]
    cfg["eval"]["suites"] = {  # a few rows of a few tasks: the wiring is under test, not the scores
        "fast": {"heldout": {"samples": 2}, "piqa": {"samples": 4}},
        "full": {"heldout": {"samples": 2}, "piqa": {"samples": 4}, "crows_pairs": {"samples": 4}},
    }
    cfg["registry"]["model_name"] = "pharia-e2e"
    status, body = _get(f"{platform.prefect}/api/deployments/name/pharia-pipeline/local")
    assert status == 200, "deployment pharia-pipeline/local is missing"
    deployment_id = json.loads(body)["id"]
    flow_run = _post(
        f"{platform.prefect}/api/deployments/{deployment_id}/create_flow_run", {"parameters": {"config": cfg}}
    )
    deadline = time.monotonic() + PIPELINE_TIMEOUT_S
    state = None
    while time.monotonic() < deadline:
        state = json.loads(_get(f"{platform.prefect}/api/flow_runs/{flow_run['id']}")[1])["state"]
        if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        time.sleep(5)
    worker_log = (platform.home / "services" / "prefect-worker.log").read_text(errors="replace")[-6000:]
    assert state and state["type"] == "COMPLETED", f"flow run ended {state}:\n{worker_log}"

    versions = queries.list_versions(platform.mlflow, "pharia-e2e")
    # gated requirements whose metrics are not in this small suite leave the dossier incomplete
    assert versions and versions[0].verdict in ("pass", "fail", "incomplete") and "candidate" in versions[0].aliases
    report = queries.load_compliance_report(platform.mlflow, "pharia-e2e", versions[0].version)
    assert report.data["schema"] == "pharia.compliance/v1" and report.markdown
    assert queries.metric_history(platform.mlflow, versions[0].run_id, ("train_loss",))

    monkeypatch.setenv("MLFLOW_TRACKING_URI", platform.mlflow)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert "pharia-e2e" in set(at.dataframe[0].value["model"])


@pytest.mark.e2e
def test_down_stops_everything_and_is_idempotent(platform: Running) -> None:
    services_dir = platform.home / "services"
    pids = [procs.ProcessRecord.read(services_dir, name).pid for name in SERVICES]
    began = time.monotonic()
    down = _platform(platform.env, "down", timeout=120)
    seconds = time.monotonic() - began
    assert down.returncode == 0, down.stderr
    for name in SERVICES:
        assert f"stopped {name}" in down.stdout
    assert not any(procs.is_running(pid) for pid in pids)
    assert _processes_of(platform.home) == []
    assert list(services_dir.glob("*.pid")) == [] and list(services_dir.glob("*.json")) == []
    again = _platform(platform.env, "down", timeout=60)
    assert again.returncode == 0 and "nothing to stop" in again.stdout
    print(f"\ndown took {seconds:.1f} s:\n{down.stdout}")


# ---------------------------------------------------------------------- no platform needed
def test_up_refuses_a_port_in_use_and_names_its_owner(tmp_path: Path) -> None:
    ports = _free_ports(3)
    env = _env(tmp_path / "home", ports)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports[1]))
        busy.listen()
        up = _platform(env, "up", timeout=60)
    assert up.returncode == 1
    assert f"port {ports[1]} for the MLflow server is already in use by pid {os.getpid()}" in up.stderr
    assert "PHARIA_MLFLOW_PORT" in up.stderr
    assert list((tmp_path / "home" / "services").glob("*.pid")) == []  # nothing was started


@pytest.mark.e2e
def test_up_fails_clearly_and_undoes_a_partial_start(tmp_path: Path) -> None:
    """No server answers within 3 s: `up` names the service and its log, then stops what it started."""
    home = tmp_path / "home"
    up = _platform(_env(home, _free_ports(3)), "up", "--timeout", "3", timeout=120)
    assert up.returncode == 1
    assert "did not answer its health check within 3 s; see" in up.stderr
    assert str(home / "services" / "prefect-server.log") in up.stderr
    assert "stopped prefect-server" in up.stdout
    assert _processes_of(home) == []
    assert list((home / "services").glob("*.pid")) == []


def test_down_leaves_an_unrelated_process_alone(tmp_path: Path) -> None:
    """A PID file outliving its process (reboot, crash) may name a process someone else started."""
    home = tmp_path / "home"
    services_dir = home / "services"
    bystander = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        ticks = procs.start_ticks(bystander.pid)
        # Same PID, different process: the start time recorded at `up` no longer matches.
        procs.ProcessRecord(
            "prefect-server", bystander.pid, ticks - 1, ["python", "-m", "prefect"], "SIGTERM", "x.log"
        ).write(services_dir)
        # A bare PID file without its record cannot be verified at all.
        (services_dir / "mlflow-server.pid").write_text(f"{bystander.pid}\n")
        down = _platform(_env(home, _free_ports(3)), "down", timeout=60)
        assert down.returncode == 0, down.stderr
        assert "left it alone" in down.stdout and "without its record" in down.stdout
        assert bystander.poll() is None and procs.is_running(bystander.pid)
        assert [p.name for p in services_dir.iterdir() if not p.name.startswith(".")] == []
    finally:
        os.killpg(bystander.pid, signal.SIGKILL)
        bystander.wait()
