"""Helpers of the real-package tests (see ``conftest.py`` here for what they are)."""

import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from helpers import exporter
from helpers.e2e import jsonl_rows, new_workload

#: The releases these tests verify; requirements/real-*.txt pin the same versions.
RELEASES = {
    "torchtitan": "0.3.0",
    "keras": "3.15.1",
    "megatron-bridge": "0.3.1",
    "megatron-core": "0.16.1",
    "jax": "0.10.2",
    "clu": "0.0.12",
    "tensorflow-cpu": "2.21.0",
    "maxtext": "0.2.5",
}

#: A line a program prints with what the framework itself recorded (history, values seen).
ORACLE_MARK = "REAL-ORACLE:"


def require(*dists: str, module: Optional[str] = None) -> None:
    """Skip the calling test module unless each distribution is installed at the release
    in :data:`RELEASES` (checked from package metadata: nothing is imported)."""
    for dist in dists:
        want = RELEASES[dist]
        try:
            have = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{dist}=={want} is not installed (run `make test-real`: "
                        f"scripts/test-real.sh, requirements/real-*.txt)", allow_module_level=True)
        if have != want:
            pytest.skip(f"{dist} {have} is installed; this module verifies {dist}=={want}",
                        allow_module_level=True)
    if module and importlib.util.find_spec(module) is None:
        pytest.skip(f"module {module} is not importable", allow_module_level=True)


def installed(dist: str) -> bool:
    try:
        return importlib.metadata.version(dist) == RELEASES[dist]
    except importlib.metadata.PackageNotFoundError:
        return False


@dataclasses.dataclass
class RealRun:
    """One finished program: its output, what the exporter emitted, what the server got."""

    proc: subprocess.CompletedProcess
    tmp: Path
    output: Path
    server: object
    workload: str

    @property
    def rows(self) -> List[dict]:
        """Every point the exporter emitted (local JSONL sink)."""
        return jsonl_rows(str(self.output))

    def oracle(self) -> dict:
        """The program's ``REAL-ORACLE:`` line: what the framework itself recorded."""
        for line in self.proc.stdout.splitlines():
            if line.startswith(ORACLE_MARK):
                return json.loads(line[len(ORACLE_MARK):])
        raise AssertionError(f"no {ORACLE_MARK} line in the program's output:\n{self.proc.stdout[-3000:]}")

    def wandb_run_dir(self) -> str:
        """The offline W&B run the program made (frameworks pass their own ``dir=``, so search)."""
        import glob

        dirs = sorted(glob.glob(str(self.tmp / "**" / "wandb" / "offline-run-*"), recursive=True))
        assert len(dirs) == 1, f"expected one offline W&B run under {self.tmp}: {dirs}"
        return dirs[0]

    def detection(self, base: str, timeout: float = 30) -> dict:
        """The server's detection once it names ``base`` exactly (else the last one, for the message)."""
        def current():
            try:
                return (exporter.workload(self.server, self.workload) or {}).get("detection") or {}
            except AssertionError:  # 404 until the first report is stored: keep waiting
                return {}

        def ready():
            det = current()
            return det if det.get("base") == base and det.get("method") == "exact" else None

        return exporter.wait_for(ready, timeout=timeout) or current()

    def server_points(self, source: str, expected: int, timeout: float = 30) -> List[dict]:
        """The server's points of one data source, once ``expected`` of them arrived."""
        def ready():
            pts = exporter.metric_points(self.server, self.workload, data_source=source)
            return pts if len(pts) >= expected else None

        return exporter.wait_for(ready, timeout=timeout) or \
            exporter.metric_points(self.server, self.workload, data_source=source)


def run_real(server, tmp_path: Path, prefix: str, code: str, timeout: int = 300, **env_extra) -> RealRun:
    """Run ``code`` in a fresh interpreter with the exporter active (its installed start-up
    line), wandb offline, reporting to ``server`` and writing every emitted point to the
    local JSONL sink.  Asserts the program exited 0."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    uid = new_workload(prefix)
    output = tmp_path / "lens-jsonl"
    env = exporter.exporter_env(server, tmp_path, uid, **env_extra)
    env.update({"PRIMUS_LENS_WANDB_API_REPORTING": "true", "PRIMUS_LENS_WANDB_OUTPUT_PATH": str(output),
                "REAL_TMP": str(tmp_path)})
    script = tmp_path / f"{prefix}_program.py"
    script.write_text(code)
    proc = exporter.run_python(str(script), env, timeout=timeout, cwd=str(tmp_path))
    return RealRun(proc, tmp_path, output, server, uid)


def emitted(rows: List[dict], source: str) -> Dict[tuple, list]:
    """{(name, step): [values]} the exporter emitted for ``source`` (a list: twice shows as two)."""
    out: Dict[tuple, list] = {}
    for r in rows:
        if r["source"] == source:
            out.setdefault((r["name"], float(r["step"])), []).append(r["value"])
    return out


def assert_points(rows: List[dict], source: str, expected: Dict[tuple, float], rel: float = 1e-6) -> None:
    """The exporter emitted, for ``source``, exactly ``expected`` ({(name, step): value}), each once,
    and nothing under any other source (a point reported by two paths is a duplicate)."""
    got = emitted(rows, source)
    expected = {(n, float(s)): v for (n, s), v in expected.items()}
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    twice = {k: v for k, v in got.items() if len(v) > 1}
    wrong = {k: (expected[k], got[k][0]) for k in set(expected) & set(got)
             if got[k][0] != pytest.approx(expected[k], rel=rel, abs=1e-9)}
    others = sorted({r["source"] for r in rows} - {source})
    assert not (missing or extra or twice or wrong or others), (
        f"{source}: {len(expected)} expected, {sum(map(len, got.values()))} emitted; missing {missing[:20]}, "
        f"extra {extra[:20]}, twice {dict(list(twice.items())[:10])}, wrong {dict(list(wrong.items())[:10])}, "
        f"other sources {others}")


def assert_server_has(run: RealRun, source: str, expected: Dict[tuple, float], rel: float = 1e-6) -> None:
    """The Lens server stored exactly ``expected`` ({(name, step): value}) for ``source``, each once."""
    pts = run.server_points(source, len(expected))
    got: Dict[tuple, list] = {}
    for p in pts:
        got.setdefault((p["metric_name"], float(p["iteration"])), []).append(p["value"])
    want = {(n, float(s)): v for (n, s), v in expected.items()}
    assert set(got) == set(want), f"server {source}: missing {sorted(set(want) - set(got))[:20]}, " \
                                  f"extra {sorted(set(got) - set(want))[:20]}"
    for key, values in got.items():
        assert len(values) == 1, f"server holds {key} {len(values)} times"
        assert values[0] == pytest.approx(want[key], rel=rel, abs=1e-9), f"server {key}: {values[0]} != {want[key]}"
