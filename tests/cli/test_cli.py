"""``primus-lens doctor`` and ``primus-lens replay`` against the real server."""

import json
import os
import subprocess
import sys

import pytest
from helpers.exporter import exporter_env, get_json, run_python


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
    from primus_lens_wandb_exporter.sinks.spool import Spool

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


def _table(stdout):
    """The recent-runs table of doctor's output: header line and row lines."""
    lines = stdout.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("  recent runs"))
    table = []
    for ln in lines[i + 1:]:
        if not ln.startswith("    "):
            break
        table.append(ln)
    return table


def test_doctor_lists_recent_runs_newest_first_with_workload_age_and_where_points_went(lens_server_factory,
                                                                                       tmp_path):
    # Three real exporter processes share one spool; their workload names sort the other
    # way round from their order in time (the list used to be sorted by file name).
    open_srv, locked = lens_server_factory(), lens_server_factory(token="right-token")
    log3 = "import wandb; wandb.init(project='p'); [wandb.log({'loss': float(i)}) for i in range(3)]; wandb.finish()"
    run_python(log3, exporter_env(open_srv, tmp_path, "zz-sent"))
    run_python(log3, exporter_env(None, tmp_path, "aa-spooled", PRIMUS_LENS_TESTING="0", PRIMUS_LENS_EXIT_TIMEOUT="1"))
    run_python(log3, exporter_env(locked, tmp_path, "mm-refused", PRIMUS_LENS_TESTING="0",
                                  PRIMUS_LENS_EXIT_TIMEOUT="1"))
    env = exporter_env(open_srv, tmp_path, "doc-runs")
    proc = _cli(["doctor"], env, check=False)
    header, *rows = _table(proc.stdout)
    assert header.split() == ["age", "workload", "pod", "pid", "points", "sent", "spooled", "rejected", "batches",
                              "refused", "(auth)"]
    cells = [r.split() for r in rows]
    assert [c[2] for c in cells] == ["mm-refused", "aa-spooled", "zz-sent"], proc.stdout
    assert all(c[1] == "ago" and c[0][-1] in "sm" for c in cells), rows
    # points sent, spooled, rejected; batches refused for the token
    counts = {c[2]: [int(x) for x in c[-4:]] for c in cells}
    assert counts["zz-sent"] == [3, 0, 0, 0], rows      # all delivered
    assert counts["aa-spooled"] == [0, 3, 0, 0], rows   # no server: kept in the spool
    assert counts["mm-refused"][:3] == [0, 3, 0] and counts["mm-refused"][3] > 0, rows  # 401: no token, kept
    # Aligned: numbers right-aligned under their header, so every line ends at the same column.
    assert len({len(ln) for ln in [header, *rows]}) == 1, "\n".join([header, *rows])
    report = json.loads(_cli(["doctor", "--json"], env, check=False).stdout)
    assert [c["workload_uid"] for c in report["counters"]] == ["mm-refused", "aa-spooled", "zz-sent"]

    # At most 10 shown, newest first, and how many older ones were left out.
    stats_dir = tmp_path / "spool" / "stats"
    newest = max(stats_dir.glob("*.json"), key=lambda p: json.loads(p.read_text())["written_at"])
    base = json.loads(newest.read_text())
    for i in range(12):
        old = dict(base, workload_uid=f"old-{i:02d}", written_at=base["written_at"] - 3600 * (i + 1))
        (stats_dir / f"old-{i:02d}-{i}.json").write_text(json.dumps(old))
    report = json.loads(_cli(["doctor", "--json"], env, check=False).stdout)
    assert [c["workload_uid"] for c in report["counters"]] == \
        ["mm-refused", "aa-spooled", "zz-sent"] + [f"old-{i:02d}" for i in range(7)]
    assert report["counters_older"] == 5
    proc = _cli(["doctor"], env, check=False)
    assert "5 older not shown" in proc.stdout
    assert [r.split()[:3] for r in _table(proc.stdout)[1:]][3:5] == [["1h", "ago", "old-00"], ["2h", "ago", "old-01"]]


def test_doctor_without_a_server_prints_one_line_with_the_variable_to_set(tmp_path):
    env = exporter_env(None, tmp_path, "doc-down")  # PRIMUS_LENS_API_BASE_URL points at a closed port
    proc = _cli(["doctor"], env, check=False)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stdout.splitlines() if "not reachable" in ln]
    assert len(lines) == 1, proc.stdout
    assert "connection refused" in lines[0] and "PRIMUS_LENS_API_BASE_URL" in lines[0], lines
    for raw in ("MaxRetryError", "HTTPConnectionPool", "NewConnectionError", "Traceback"):
        assert raw not in proc.stdout + proc.stderr, proc.stdout
    report = json.loads(_cli(["doctor", "--json"], env, check=False).stdout)
    assert report["api"]["error"] == "connection refused" and "MaxRetryError" in report["api"]["detail"]
    # Without the variable the default (the in-cluster Service name) is tried: say so.
    env.pop("PRIMUS_LENS_API_BASE_URL")
    proc = _cli(["doctor"], env, check=False)
    (line,) = [ln for ln in proc.stdout.splitlines() if "not reachable" in ln]
    assert "PRIMUS_LENS_API_BASE_URL is not set" in line and "primus-lens-telemetry-processor" in line, line


def test_doctor_json_into_a_pipe_closed_early_prints_no_traceback(tmp_path):
    # `primus-lens doctor --json | head -1`: the reader is gone before the report is written.
    # (Closed before the first write, so the write fails whatever the report's size and timing.)
    env = exporter_env(None, tmp_path, "doc-pipe")
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    try:
        proc = subprocess.run([sys.executable, "-m", "primus_lens_wandb_exporter.cli", "doctor", "--json"], env=env,
                              stdout=write_fd, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_fd)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.stderr == "" and proc.returncode == 1  # 1: the report has problems (no server), as without a pipe


def test_doctor_says_a_read_only_token_cannot_ingest(lens_server_factory, tmp_path):
    # Roles: an ingest token may POST /api/v1/wandb/*, a read token gets 403 there.
    helptext = subprocess.run([sys.executable, "-m", "primus_lens_wandb_exporter.server", "--help"],
                              capture_output=True, text=True, timeout=60).stdout
    if "--read-token" not in helptext:
        pytest.skip("this server has no --read-token / --ingest-token (token roles) yet")
    srv = lens_server_factory(token="admin-token", extra_args=["--ingest-token", "ingest-token",
                                                               "--read-token", "read-token"])
    env = exporter_env(srv, tmp_path, "doc-roles", PRIMUS_LENS_API_TOKEN="read-token")
    proc = _cli(["doctor"], env, check=False)
    assert proc.returncode == 1, proc.stdout
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("✗ Lens ingest")]
    assert "this token cannot ingest (403" in line and "ingest token" in line, line
    assert sum("cannot ingest" in ln for ln in proc.stdout.splitlines()) == 1, proc.stdout
    for token in ("ingest-token", "admin-token"):
        env = exporter_env(srv, tmp_path, "doc-roles", PRIMUS_LENS_API_TOKEN=token)
        assert "✓ Lens accepts this token for ingest" in _cli(["doctor"], env).stdout
