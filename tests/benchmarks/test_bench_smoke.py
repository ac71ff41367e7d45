"""Every benchmark the README and docs cite still runs (issue 15 item 10).

A number whose command no longer runs cannot be reproduced: `bench_ui_first_paint.py` once
failed on `main` with an ImportError for weeks.  Each benchmark runs here once at a tiny
size, with the same code path as the cited command; the test checks that it exits 0 and
prints its numbers.  Nothing is timed here (numbers belong to the benchmarks themselves).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PG_DSN = os.environ.get("PRIMUS_LENS_TEST_POSTGRES_DSN")

#: script -> the smallest arguments that still run every part of it
SMOKE = {
    "bench_log_overhead.py": ["--calls", "300", "--rounds", "1", "--modes", "disabled", "--states", "up,down"],
    "bench_startup.py": ["--runs", "3", "--init-runs", "1"],
    "bench_delivery.py": ["--calls", "500"],
    "bench_log_instructions.py": ["--calls", "300"],
    "bench_worker_rules.py": ["--calls", "2000", "--repeat", "1"],
    "bench_worker_cpu.py": ["--calls", "1000", "--rounds", "1", "--offline-calls", "200"],
    "bench_import_wandb.py": ["--rows", "200"],
    "bench_loss_window.py": ["--trials", "1", "--scenarios", "down"],
    "bench_server_ingest.py": ["--senders", "2", "--batch", "200", "--batches", "2", "--metrics", "2"],
    "bench_server_query.py": ["--points", "5000", "--points-10m", "0", "--runs", "2"],
    "bench_server_memory.py": ["--points", "20000"],
    "bench_fleet.py": ["--quick", "--lockstep", "phases"],
    "bench_ui_first_paint.py": ["--quick"],
}

CITED = re.compile(r"benchmarks/(bench_[a-z0-9_]+\.py)")


def test_every_cited_and_every_present_benchmark_has_a_smoke_run():
    cited = set()
    for doc in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        cited.update(CITED.findall(doc.read_text(encoding="utf-8")))
    present = {p.name for p in (ROOT / "benchmarks").glob("bench_*.py")}
    assert cited <= present, f"cited but missing: {sorted(cited - present)}"
    assert present == set(SMOKE), f"no smoke run: {sorted(present - set(SMOKE))}; gone: {sorted(set(SMOKE) - present)}"


def _needs(script):
    if script in ("bench_log_instructions.py",) and not shutil.which("valgrind"):
        return "valgrind is not installed (apt-get install valgrind): it counts the instructions"
    if script == "bench_ui_first_paint.py" and not os.path.exists("/usr/bin/chromium"):
        return "Chromium is not at /usr/bin/chromium"
    return None


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMOKE))
def test_benchmark_runs_at_a_tiny_size(script, tmp_path):
    reason = _needs(script)
    if reason:
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRIMUS_LENS_", "WANDB_"))}
    env.update(WANDB_DIR=str(tmp_path), WANDB_SILENT="true", HOME=os.environ.get("HOME", str(tmp_path)))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *SMOKE[script]], cwd=str(tmp_path),
                          env=env, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert re.search(r"\d", proc.stdout), proc.stdout[-2000:]


#: modes of a benchmark the docs cite besides its smoke run above: (id, argv, what it must print)
MODES = [
    ("fleet-storage-timeline",
     ["bench_fleet.py", "--storage", "--ranks", "20", "--group", "4", "--groups", "40", "--prefill", "300",
      "--timeline"], r"rounds: median [\d.]+ ms, slowest"),
    ("fleet-timeline-fsync-probe",
     ["bench_fleet.py", "--quick", "--timeline", "--fsync-probe", "."],
     r"t=\s+\d+s requests=.* \| server max=[\s\S]*\nfsync probe: \d+ flushes of 8 KiB"),
]


@pytest.mark.slow
@pytest.mark.parametrize("argv,expect", [m[1:] for m in MODES], ids=[m[0] for m in MODES])
def test_a_cited_benchmark_mode_runs_at_a_tiny_size(argv, expect, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRIMUS_LENS_", "WANDB_"))}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / argv[0]), *argv[1:]], cwd=str(tmp_path),
                          env=env, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert re.search(expect, proc.stdout), proc.stdout[-2000:]
