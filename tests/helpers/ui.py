"""A real ``primus-lens`` server process and a client that feeds it through the ingest API.

Shared by the UI and Grafana tests and the UI benchmark; the process itself is run by
:mod:`helpers.server`.
Nothing here imitates the server: points go in through ``POST /api/v1/wandb/*``
exactly as the exporter sends them (docs/protocol.md).
"""

from __future__ import annotations

import importlib.util
import sys
import time
import uuid
from pathlib import Path
from typing import Iterable, Optional, Sequence

import requests

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
from helpers.server import LensServer as _ServerProcess  # (the server engineers' runner)


def server_available() -> Optional[str]:
    """None when the server can run here, else the reason it cannot."""
    try:
        if importlib.util.find_spec("primus_lens_wandb_exporter.server.__main__") is None:
            return "python -m primus_lens_wandb_exporter.server is not there yet (server issue)"
        for module in ("fastapi", "uvicorn"):
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed (pip install -e '.[server]')"
    except ImportError as exc:
        return f"server package does not import: {exc}"
    return None


class LensServer:
    """The real server process (``helpers.server.LensServer``) plus ingest helpers.

    ``url`` serves the UI, ``api`` is ``url + "/api/v1"``.
    """

    def __init__(self, process) -> None:
        self.process = process
        self.url = process.url
        self.api = process.api
        self.token = process.token

    @classmethod
    def start(cls, workdir: Path, token: Optional[str] = None, extra_args: Sequence[str] = ()) -> "LensServer":
        workdir.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex[:8]
        process = _ServerProcess(f"sqlite:///{workdir}/lens-{name}.db", workdir / f"server-{name}.log", token,
                                 extra_args)
        return cls(process.start())

    def stop(self) -> None:
        self.process.stop()

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

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
