"""Helpers shared by the end-to-end tests: run real programs with the exporter active
(it is activated by the installed start-up line, exactly as for users) and read
back what the real Lens server stored."""

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.parse

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def exporter_env(server, tmp_path, workload, pod_name=None, **extra):
    """Environment of a training process that reports to ``server``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRIMUS_LENS_", "WANDB_"))}
    env.update({
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path),
        "WANDB_SILENT": "true",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_X_DISABLE_STATS": "true",
        "POD_NAME": pod_name or f"{workload}-pod-0",
        "WORKLOAD_UID": workload,
        "PRIMUS_LENS_API_BASE_URL": server.api if server is not None else "http://127.0.0.1:9/api/v1",
        "PRIMUS_LENS_SPOOL_DIR": str(tmp_path / "spool"),
        "PRIMUS_LENS_TESTING": "1",
        "PRIMUS_LENS_FLUSH_INTERVAL": "0.2",
        "PYTHONUNBUFFERED": "1",
    })
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_cli(args, env, check=True, timeout=300):
    """Run ``primus-lens ARGS`` in a fresh interpreter; asserts exit 0 unless ``check=False``."""
    proc = subprocess.run([sys.executable, "-m", "primus_lens_wandb_exporter.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-8000:]}")
    return proc


def run_python(code, env, timeout=300, args=(), check=True, cwd=None):
    """Run ``code`` (source text or a path) in a fresh interpreter; return the CompletedProcess."""
    if os.path.exists(str(code)):
        cmd = [sys.executable, str(code), *args]
    else:
        cmd = [sys.executable, "-c", textwrap.dedent(code), *args]
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-8000:]}")
    return proc


def get_json(server, path, token=None, **params):
    """GET ``{server.url}{path}`` with query params; returns the decoded body (asserts 200)."""
    url = server.url + path
    if params:
        url += "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.get(url, headers=headers, timeout=30)
    assert response.status_code == 200, f"{url} -> {response.status_code} {response.text[:500]}"
    return response.json()


def metric_points(server, workload, metrics=None, data_source="wandb", **params):
    """All points of a workload as the query API returns them."""
    body = get_json(server, f"/api/v1/workloads/{workload}/metrics/data", data_source=data_source,
                    metrics=",".join(metrics) if metrics else None, **params)
    return body["data"]


def series(points, name, rank=None):
    """{iteration: value} of one metric (optionally one rank)."""
    return {p["iteration"]: p["value"] for p in points
            if p["metric_name"] == name and (rank is None or p["rank"] == rank)}


def workload(server, uid):
    return get_json(server, f"/api/v1/workloads/{uid}")


def wait_for(predicate, timeout=30.0, interval=0.2):
    """Poll ``predicate`` until it returns a truthy value; return it (or the last value)."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def dumps(obj):
    return json.dumps(obj, indent=1, sort_keys=True)[:3000]


def wandb_records(run_dir):
    """Every protobuf ``Record`` W&B wrote to an offline run's ``.wandb`` file, in order.

    The file is wandb's LevelDB-style log (32 KiB blocks of CRC/length/type-framed chunks);
    wandb 0.31 ships no reader for it in Python, so this is the one reader the tests share.
    """
    import glob
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    path = glob.glob(os.path.join(run_dir, "run-*.wandb"))[0]
    data = open(path, "rb").read()
    block, pos, chunks = 32768, 7, []
    while pos + 7 <= len(data):
        if block - (pos % block) < 7:  # block trailer padding
            pos += block - (pos % block)
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if length == 0 and kind == 0:
            pos += block - (pos % block)
            continue
        chunks.append(data[pos:pos + length])
        pos += length
        if kind in (1, 4):  # FULL or LAST
            rec = pb.Record()
            rec.ParseFromString(b"".join(chunks))
            chunks = []
            yield rec


def wandb_offline_records(run_dir):
    """History rows and summary updates W&B itself recorded, read from an offline run's
    ``.wandb`` file (see :func:`wandb_records`).

    Lets tests compare what the user's W&B run received with what Lens stored.
    Returns ``(history, summary)``: ``history`` a list of ``{key: value}`` rows (with
    ``_step``), ``summary`` a dict of summary keys set by the program.
    """
    history, summary = [], {}
    for rec in wandb_records(run_dir):
        which = rec.WhichOneof("record_type")
        if which == "history":
            history.append({(i.key or ".".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item})
        elif which == "summary":
            for item in rec.summary.update:
                summary[item.key or ".".join(item.nested_key)] = json.loads(item.value_json)
    return history, summary


def wandb_run_dir(wandb_dir):
    import glob

    dirs = sorted(glob.glob(os.path.join(str(wandb_dir), "wandb", "offline-run-*")))
    assert dirs, f"no offline run under {wandb_dir}"
    return dirs[-1]
