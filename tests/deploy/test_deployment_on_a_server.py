"""The demo deployment as a Prefect user runs it: a real server and process worker on 127.0.0.1, `prefect
deploy`, `prefect deployment run`, a SIGKILL of the flow-run process during training, `prefect flow-run
retry`; then the root run's summary, per-run artifact keys, the logs and an exact resume."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import SMALL_SYNTH

from motionfit.flows.artifacts import run_key, run_scope
from motionfit.storage.layout import RunLayout

pytestmark = pytest.mark.slow
psutil = pytest.importorskip("psutil")

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
TEACHER_EPOCHS = 40
WORKER_CRASH_REPORT = "prefect.flow_runs.worker - Check whether the flow run exceeded its memory allocation"
NETWORK = {"epochs": 2, "batch_size": 8, "num_workers": 0}
OVERRIDES = {
    "methods": ["scratch", "motionfit"],
    "synth": SMALL_SYNTH,
    "decode": {"short_side": 48},
    "teacher": {**NETWORK, "epochs": TEACHER_EPOCHS},
    "motionfit": NETWORK,
    "finetune": NETWORK,
    "evaluate": {"fewshot_shots": [1], "gradcam_videos": 1, "retrieval_clips": 1},
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgreSQL:
    """A PostgreSQL server of Debian's package on 127.0.0.1 (run as the ``postgres`` user when the tests run
    as root, which PostgreSQL refuses), in a folder of its own, with one database ``prefect``."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.port = _free_port()
        self.data = Path(tempfile.mkdtemp(prefix="motionfit-postgres-"))
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            account = pwd.getpwnam("postgres")
            os.chown(self.data, account.pw_uid, account.pw_gid)
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/prefect"
        self.process: subprocess.Popen | None = None

    def _run(self, program: str, *args: str) -> None:
        command = [*self.as_user, str(self.binaries / program), *args]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data / "db"), "-A", "trust", "-U", "postgres", "--no-sync")
        command = [*self.as_user, str(self.binaries / "postgres"), "-D", str(self.data / "db")]
        options = ["-h", "127.0.0.1", "-p", str(self.port), "-k", str(self.data), "-F"]
        self.process = subprocess.Popen(
            [*command, *options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        address = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        _wait(
            "PostgreSQL",
            lambda: subprocess.run([str(self.binaries / "pg_isready"), *address]).returncode == 0,
            60,
        )
        self._run("createdb", *address, "prefect")

    def count(self, table: str) -> int:
        """Rows of ``table`` in the ``prefect`` database."""
        address = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "prefect"]
        query = [str(self.binaries / "psql"), *address, "-tAc", f"select count(*) from {table}"]
        return int(subprocess.run(query, check=True, capture_output=True, text=True, timeout=60).stdout)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
        shutil.rmtree(self.data, ignore_errors=True)


def _postgres_binaries() -> Path | None:
    """The folder of PostgreSQL's server programs (Debian keeps them out of PATH), if installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    initdb = found[-1] if found else (Path(shutil.which("initdb")) if shutil.which("initdb") else None)
    return initdb.parent if initdb is not None else None


class Server:
    """A Prefect server on 127.0.0.1 (on ``database_url``, else SQLite in ``home``) and the environment of the
    commands that talk to it."""

    def __init__(self, home: Path, database_url: str | None) -> None:
        self.port = _free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
        if database_url is not None:
            self.env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
        self.env.pop("PREFECT_PROFILES_PATH", None)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.api + path, data=data, method=method, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def prefect(self, *args: str) -> str:
        done = subprocess.run(
            [PREFECT, *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def start(self, *args: str, log: Path) -> subprocess.Popen:
        with log.open("w") as out:
            return subprocess.Popen(
                [PREFECT, *args],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


def _stop(process: subprocess.Popen) -> None:
    """Stop a process started here and its children, by its process group."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def _wait(what: str, ready: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = ready()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgreSQL | None]:
    """PostgreSQL, the production database of a Prefect server, where its programs are installed."""
    binaries = _postgres_binaries()
    if binaries is None:
        yield None
        return
    database = PostgreSQL(binaries)
    try:
        database.start()
        yield database
    finally:
        database.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, postgres: PostgreSQL | None) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("prefect-home")
    server = Server(home, None if postgres is None else postgres.url)
    process = server.start(
        "server", "start", "--host", "127.0.0.1", "--port", str(server.port), log=home / "server.log"
    )
    try:
        _wait("the Prefect server", lambda: server.call("GET", "/health"), timeout=180)
        yield server
    finally:
        _stop(process)


def _flow_runs(server: Server, **flow_run_filter: Any) -> list[dict[str, Any]]:
    return server.call("POST", "/flow_runs/filter", {"flow_runs": flow_run_filter, "limit": 200})


def _logs(server: Server, flow_run_ids: list[str]) -> list[str]:
    query = {"logs": {"flow_run_id": {"any_": flow_run_ids}}, "limit": 200, "sort": "TIMESTAMP_ASC"}
    found = server.call("POST", "/logs/filter", query)
    messages = [log["message"] for log in found]
    offset = 200
    while len(found) == 200:
        query = {**query, "offset": offset}
        found = server.call("POST", "/logs/filter", query)
        messages += [log["message"] for log in found]
        offset += 200
    return messages


def _state(server: Server, flow_run_id: str) -> dict[str, Any]:
    return server.call("GET", f"/flow_runs/{flow_run_id}")["state"]


def _finished(server: Server, flow_run_id: str) -> dict[str, Any] | None:
    state = _state(server, flow_run_id)
    return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None


def test_a_killed_deployment_run_is_retried_and_resumes(server: Server, tmp_path: Path) -> None:
    run_root = str(tmp_path / "run")
    server.prefect("variable", "set", "motionfit_home", str(ROOT))
    server.prefect("work-pool", "create", "motionfit-cpu", "--type", "process")
    server.prefect("--no-prompt", "deploy", "--name", "demo")
    worker = server.start("worker", "start", "--pool", "motionfit-cpu", log=tmp_path / "worker.log")
    try:
        overrides = {**OVERRIDES, "synth_root": str(tmp_path / "data")}
        parameters = {"preset": "tiny", "run_root": run_root, "overrides": overrides}
        printed = server.prefect("deployment", "run", "motionfit/demo", "--params", json.dumps(parameters))
        flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", printed)[1]

        def children() -> list[str]:
            return [run["id"] for run in _flow_runs(server, parent_flow_run_id={"any_": [flow_run_id]})]

        def training_underway() -> bool:
            ended = _finished(server, flow_run_id)
            assert ended is None, f"the run ended before the kill: {ended}"
            messages = _logs(server, [flow_run_id, *children()])
            return any(re.match(r"teacher epoch [3-9]\d*/", m) for m in messages)

        _wait("the teacher's third epoch", training_underway, timeout=600)
        flow_commits = RunLayout.at(run_root).markers("flow").committed_ids()
        committed = {
            v: RunLayout.at(run_root).markers("flow").committed_info(v)["time"] for v in flow_commits
        }
        for child in psutil.Process(worker.pid).children(recursive=True):  # the flow-run process
            child.send_signal(signal.SIGKILL)
        crashed = _wait("the worker to report the crash", lambda: _finished(server, flow_run_id), timeout=120)
        assert crashed["type"] == "CRASHED", crashed
        subflows = _flow_runs(server, parent_flow_run_id={"any_": [flow_run_id]})
        left_running = [run["id"] for run in subflows if run["state_type"] == "RUNNING"]
        assert left_running, "the killed run's teacher subflow stays Running until the retry"

        # The process worker reports the crash twice, the second time some seconds later; a retry made in
        # between would be overridden by that report.
        worker_log = tmp_path / "worker.log"
        _wait("the worker's crash report", lambda: WORKER_CRASH_REPORT in worker_log.read_text(), timeout=120)
        server.prefect("flow-run", "retry", flow_run_id)
        final = _wait("the retried run", lambda: _finished(server, flow_run_id), timeout=900)
        assert final["type"] == "COMPLETED", final

        for stale in left_running:
            assert _state(server, stale)["type"] == "CRASHED", "the retry marks the stale subflow Crashed"
        layout = RunLayout.at(run_root)
        assert flow_commits and {
            v: layout.markers("flow").committed_info(v)["time"] for v in flow_commits
        } == (committed), "no committed video is computed again"
        messages = _logs(server, [flow_run_id, *children()])
        assert any(m.startswith("stage 1/8: ingest") for m in messages)
        resumed_teacher = r"teacher: resuming after epoch (?:[3-9]|[1-3]\d) of 40 from "  # 3 to 39
        assert any(re.match(resumed_teacher, m) for m in messages)
        resumed_decode = r"decode: 24 of 24 videos done \(0 computed now, 24 committed before\)"
        assert any(re.match(resumed_decode, m) for m in messages)
        assert any(m.startswith("student_motionfit epoch 2/2: ") for m in messages)

        artifacts = server.call("POST", "/artifacts/filter", {"limit": 200, "sort": "CREATED_DESC"})
        keys = {artifact["key"] for artifact in artifacts if artifact["key"]}
        assert keys and all(key.startswith(run_scope(layout.root) + "-") for key in keys), keys
        root_artifacts = [a for a in artifacts if a["flow_run_id"] == flow_run_id]
        summary = next(a for a in root_artifacts if a["key"] == run_key(layout.root, "summary"))
        assert "motionfit run tiny synthetic demo: Completed" in summary["data"]
        assert "| motionfit |" in summary["data"] and run_key(layout.root, "report") in summary["data"]
        epoch_tables = [a for a in artifacts if a["key"] == run_key(layout.root, "teacher", "epochs")]
        assert len(epoch_tables) == 2, "one per attempt, updated in place"
        assert [row["epoch"] for row in json.loads(epoch_tables[0]["data"])][-1] == TEACHER_EPOCHS - 1
    finally:
        _stop(worker)


def test_the_server_keeps_its_runs_in_postgresql(server: Server, postgres: PostgreSQL | None) -> None:
    if postgres is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    runs = server.call("POST", "/flow_runs/count", {})
    assert runs > 0 and postgres.count("flow_run") == runs
