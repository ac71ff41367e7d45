"""A real ``primus-lens`` server process and a client that feeds it through the ingest API.

Shared by the UI, Grafana and benchmark code (imported by path, the tests folder is
not a package).  Nothing here imitates the server: points go in through
``POST /api/v1/wandb/*`` exactly as the exporter sends them (docs/protocol.md).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import requests

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


def server_available() -> Optional[str]:
    """None when the server package can run here, else the reason it cannot."""
    if os.environ.get("PRIMUS_LENS_TEST_SERVER_URL"):
        return None
    sys.path.insert(0, str(SRC)) if str(SRC) not in sys.path else None
    try:
        if importlib.util.find_spec("primus_lens_wandb_exporter.server.app") is None:
            return "primus_lens_wandb_exporter.server.app is not there yet (server issue)"
        if importlib.util.find_spec("primus_lens_wandb_exporter.server.__main__") is None:
            return "python -m primus_lens_wandb_exporter.server is not there yet (server issue)"
    except ImportError as exc:
        return f"server package does not import: {exc}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LensServer:
    """A running server: ``url`` (root, serves the UI) and ``api`` (``.../api/v1``)."""

    url: str
    token: Optional[str] = None
    proc: Optional[subprocess.Popen] = None
    log_path: Optional[Path] = None

    @property
    def api(self) -> str:
        return self.url + "/api/v1"

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @classmethod
    def start(cls, workdir: Path, token: Optional[str] = None, timeout: float = 60.0) -> "LensServer":
        external = os.environ.get("PRIMUS_LENS_TEST_SERVER_URL")
        if external and token is None:
            return cls(url=external.rstrip("/"))
        port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        db = workdir / f"lens-{port}.db"
        cmd = [sys.executable, "-m", "primus_lens_wandb_exporter.server", "--host", "127.0.0.1",
               "--port", str(port), "--db", f"sqlite:///{db}"]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(SRC)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.pop("PRIMUS_LENS_API_TOKEN", None)
        if token:
            cmd += ["--token", token]
        log_path = workdir / f"server-{port}.log"
        log = open(log_path, "wb")
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(workdir))
        server = cls(url=f"http://127.0.0.1:{port}", token=token, proc=proc, log_path=log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                if requests.get(server.url + "/health", timeout=1).status_code == 200:
                    return server
            except requests.RequestException:
                pass
            time.sleep(0.1)
        server.stop()
        raise RuntimeError(f"server did not become healthy in {timeout} s:\n{log_path.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # ---- ingest (docs/protocol.md) -----------------------------------------------------------
    def post(self, path: str, body: dict) -> dict:
        response = requests.post(self.api + path, json=body, headers=self.headers, timeout=120)
        assert response.status_code == 200, f"POST {path} -> {response.status_code} {response.text[:500]}"
        return response.json()

    def get(self, path: str, **params) -> dict:
        response = requests.get(self.api + path, params=params, headers=self.headers, timeout=120)
        assert response.status_code == 200, f"GET {path} -> {response.status_code} {response.text[:500]}"
        return response.json()

    def detection(self, workload: str, wrapper: Optional[str], base: Optional[str], method: str = "exact",
                  confidence: float = 1.0, pod_name: str = "train-pod-0") -> dict:
        wrappers = [wrapper] if wrapper else []
        bases = [base] if base else []
        return self.post("/wandb/detection", {
            "source": "wandb", "type": "framework_detection_raw", "version": "1.0",
            "workload_uid": workload, "pod_uid": "", "pod_name": pod_name, "namespace": "default",
            "timestamp": time.time(),
            "evidence": {"wandb": {"version": "0.18.0", "project": "ui-tests"},
                         "pytorch": {"version": "2.5.0", "available": True},
                         "wrapper_frameworks": {w: {"version": "2.4.0"} for w in wrappers},
                         "base_frameworks": {b: {"version": "2.5.0"} for b in bases}},
            "hints": {"wrapper_frameworks": wrappers, "base_frameworks": bases,
                      "possible_frameworks": wrappers + bases, "confidence": "high",
                      "primary_indicators": [f"{w} adapter called" for w in wrappers],
                      "framework_layers": {"wrapper": wrappers, "base": bases}},
            "detection": {"wrapper": wrapper, "base": base, "method": method, "confidence": confidence},
        })

    def run_event(self, workload: str, run_id: str, event: str, **fields) -> dict:
        body = {"source": "wandb", "workload_uid": workload, "pod_name": fields.pop("pod_name", "train-pod-0"),
                "pod_uid": "", "run_id": run_id, "rank": fields.pop("rank", 0), "event": event,
                "timestamp": time.time()}
        body.update(fields)
        return self.post("/wandb/run", body)

    def metrics(self, workload: str, points: Iterable[dict], rank: int = 0, run_id: str = "run-1",
                world_size: int = 1, source: str = "wandb", pod_name: Optional[str] = None) -> dict:
        points = list(points)
        return self.post("/wandb/metrics", {
            "source": source, "workload_uid": workload, "pod_uid": "",
            "pod_name": pod_name or f"train-pod-{rank}", "namespace": "default", "run_id": run_id,
            "rank": rank, "local_rank": rank, "node_rank": 0, "world_size": world_size,
            "timestamp": time.time(), "batch_id": uuid.uuid4().hex, "metrics": points,
        })


def point(name: str, value, step: int, timestamp: float) -> dict:
    """One wire point; non-finite floats travel as the strings of the protocol."""
    if isinstance(value, float) and value != value:
        value = "NaN"
    elif value == float("inf"):
        value = "Infinity"
    elif value == float("-inf"):
        value = "-Infinity"
    return {"name": name, "value": value, "step": step, "timestamp": timestamp, "tags": {}}
