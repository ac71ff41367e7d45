"""``primus-lens doctor`` and ``primus-lens replay`` against the real server."""

import json
import os
import subprocess
import sys

from support import exporter_env, get_json, run_python


def _cli(args, env, check=True):
    proc = subprocess.run([sys.executable, "-m", "primus_lens_wandb_exporter.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_doctor_reports_a_healthy_setup(lens_server, tmp_path):
    env = exporter_env(lens_server, tmp_path, "doc")
    report = json.loads(_cli(["doctor", "--json"], env).stdout)
    assert report["problems"] == []
    assert report["startup_line"].endswith("primus_lens_wandb_exporter.pth")
    assert report["fresh_interpreter"]["watcher"] is True and report["fresh_interpreter"]["wandb_patched"] is True
    assert report["api"]["ok"] is True
    assert report["identity"]["workload_uid"] == "doc"


def test_doctor_names_each_problem_and_shows_the_spool_and_counters(tmp_path):
    env = exporter_env(None, tmp_path, "doc-bad", WANDB_MODE="disabled", PRIMUS_LENS_TESTING="0",
                       PRIMUS_LENS_EXIT_TIMEOUT="1", PRIMUS_LENS_BATCH_SIZE="huge")
    run_python("import wandb; wandb.init(project='p'); wandb.log({'loss': 1.0}); wandb.finish()", env)
    env.pop("POD_NAME")
    proc = _cli(["doctor", "--json"], env, check=False)
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    text = "\n".join(report["problems"])
    assert "POD_NAME is not set" in text and "Lens API not reachable" in text
    assert "PRIMUS_LENS_BATCH_SIZE='huge'" in text
    assert report["spool"]["points"] == 1 and "wait in the spool" in text
    (stats,) = report["counters"]
    assert stats["recorder"]["points"] == 1 and stats["http"]["spooled_points"] == 1


def test_replay_uploads_local_jsonl_once_however_often_it_runs(lens_server, tmp_path):
    out = tmp_path / "out"
    env = exporter_env(None, tmp_path, "replayed", WANDB_MODE="disabled", PRIMUS_LENS_WANDB_API_REPORTING="false",
                       PRIMUS_LENS_WANDB_OUTPUT_PATH=str(out))
    run_python("""
import wandb
wandb.init(project="p")
for i in range(1200):
    wandb.log({"loss": 1.0 / (i + 1), "acc": i / 1200})
wandb.finish()
""", env)
    env = exporter_env(lens_server, tmp_path, "replayed")
    for _ in range(2):
        proc = _cli(["replay", str(out), "--batch-size", "500"], env)
        assert "replayed 2400 points" in proc.stdout
    counts = {m["name"]: m["count"] for m in
              get_json(lens_server, "/api/v1/workloads/replayed/metrics/available", data_source="wandb")["metrics"]}
    assert counts == {"loss": 1200, "acc": 1200}


def test_replay_uploads_a_spool_directory(lens_server, tmp_path):
    env = exporter_env(None, tmp_path, "from-spool", WANDB_MODE="disabled", PRIMUS_LENS_TESTING="0",
                       PRIMUS_LENS_EXIT_TIMEOUT="1")
    run_python("import wandb; wandb.init(project='p'); [wandb.log({'x': float(i)}) for i in range(50)]; wandb.finish()", env)
    proc = _cli(["replay", str(tmp_path / "spool"), "--url", lens_server.api, "--delete"], env)
    assert "replayed 50 points" in proc.stdout
    data = get_json(lens_server, "/api/v1/workloads/from-spool/metrics/data", data_source="wandb")["data"]
    assert sorted(p["iteration"] for p in data) == list(range(50))
    assert not list((tmp_path / "spool").glob("*.json"))


def test_replay_includes_batches_lens_rejected_and_claims_of_dead_processes(lens_server, tmp_path):
    from primus_lens_wandb_exporter.core.spool import Spool

    def payload(name):
        return {"source": "wandb", "workload_uid": "kept", "pod_name": "kept-pod-0", "run_id": "r", "rank": 0,
                "metrics": [{"name": name, "value": float(i), "step": i} for i in range(10)]}

    spool_dir = tmp_path / "spool"
    # A batch an older version set aside after a 401 (bad token), now fixed ...
    Spool(str(spool_dir / "rejected")).write("/wandb/metrics", payload("rejected"), 10)
    # ... and one claimed by a process that was killed while sending it (pid 2**22 never runs).
    Spool(str(spool_dir)).write("/wandb/metrics", payload("orphan"), 10)
    (path,) = Spool(str(spool_dir)).files()
    os.replace(path, f"{path}.claimed-{2 ** 22}-1")
    env = exporter_env(lens_server, tmp_path, "kept")
    proc = _cli(["replay", str(spool_dir), "--url", lens_server.api, "--delete"], env)
    assert "replayed 20 points" in proc.stdout
    counts = {m["name"]: m["count"] for m in
              get_json(lens_server, "/api/v1/workloads/kept/metrics/available", data_source="wandb")["metrics"]}
    assert counts == {"rejected": 10, "orphan": 10}
    assert not list(spool_dir.rglob("*.json*"))


def test_doctor_fails_with_a_one_line_fix_when_lens_refuses_the_token(lens_server_factory, tmp_path):
    # /health is open, so a wrong or missing token used to pass as all ✓ while every batch got 401.
    srv = lens_server_factory(token="right-token")
    for token, words in (("wrong-token", "refused the token (401)"),
                         (None, "PRIMUS_LENS_API_TOKEN is not set")):
        extra = {"PRIMUS_LENS_API_TOKEN": token} if token else {}
        env = exporter_env(srv, tmp_path, "doc-auth", **extra)
        proc = _cli(["doctor"], env, check=False)
        assert proc.returncode == 1, proc.stdout
        (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("✗ Lens ingest")]
        assert words in line and "PRIMUS_LENS_API_TOKEN" in line
        report = json.loads(_cli(["doctor", "--json"], env, check=False).stdout)
        assert report["api"]["ok"] is True and report["api_auth"]["status"] == 401
        assert any(words in p for p in report["problems"])
    env = exporter_env(srv, tmp_path, "doc-auth", PRIMUS_LENS_API_TOKEN="right-token")
    proc = _cli(["doctor"], env)
    assert "✓ Lens accepts this token for ingest" in proc.stdout
    # The probe stores nothing.
    assert get_json(srv, "/api/v1/workloads", token="right-token")["workloads"] == []


def test_doctor_lists_recent_runs_with_time_workload_and_where_their_points_went(tmp_path):
    env = exporter_env(None, tmp_path, "doc-runs", WANDB_MODE="disabled", PRIMUS_LENS_TESTING="0",
                       PRIMUS_LENS_EXIT_TIMEOUT="1")
    run_python("import wandb; wandb.init(project='p'); wandb.log({'loss': 1.0}); wandb.log({'loss': 2.0}); "
               "wandb.finish()", env)
    proc = _cli(["doctor"], env, check=False)
    (line,) = [ln for ln in proc.stdout.splitlines() if " UTC workload=" in ln]
    assert " UTC workload=doc-runs pod=doc-runs-pod-0 pid=" in line
    assert "sent 0, spooled 2, rejected 0, refused by auth 0 points" in line, line
