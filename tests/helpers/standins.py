"""Runs a small training program against stand-in framework packages, with the exporter
activated by its installed start-up line (as for users), and reads back what it reported.

Each stand-in root below tests/integrations/standins/ is a directory to put on ``PYTHONPATH``; it holds
our own minimal re-implementation of a named upstream release (see each package's
docstring).  What the exporter emitted is read from the local JSONL sink
(``PRIMUS_LENS_WANDB_OUTPUT_PATH``: every point, with its data source, so "exactly once"
can be checked across sources); the detection the Recorder built is printed by the
program at exit.  With ``server=`` (a real Lens server) the program reports to it too,
and :meth:`Result.check_server` asserts that the server stored the same points and
detection.
"""

import json
import os
import sys
import textwrap

from helpers import exporter

# The stand-in roots: tests/integrations/standins/<root>/ (never on this process's sys.path).
HERE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integrations", "standins")

DETECTION_MARK = "LENS-DETECTION:"

_FOOTER = """

# ---- harness footer: deliver everything, then print the detection the Recorder built.
def _lens_footer():
    import json as _json
    from primus_lens_wandb_exporter.core import patching as _patching
    from primus_lens_wandb_exporter.core.recorder import get_recorder as _get_recorder
    _rec = _get_recorder()
    if _rec._thread is None:
        _rec._start()  # nothing was recorded: start the worker so the detector exists
    _rec.flush(10)
    _payload = _rec._detector.build(_rec._claims, list(_rec._runs.values())) if _rec._detector else {}
    print(%r + _json.dumps({"detection": _payload.get("detection"), "hints": _payload.get("hints"),
                              "evidence_base": _payload.get("evidence", {}).get("base_frameworks"),
                              "evidence_wrapper": _payload.get("evidence", {}).get("wrapper_frameworks"),
                              "our_errors": _patching.errors["count"]}), flush=True)
_lens_footer()
""" % DETECTION_MARK


def root(name):
    """Absolute path of one stand-in root (e.g. ``"megatron_head"``)."""
    path = os.path.join(HERE, name)
    assert os.path.isdir(path), path
    return path


class Result:
    """A finished training process: its output, the points it reported, its detection."""

    def __init__(self, proc, output_path, server=None, workload=None):
        self.server = server
        self.workload = workload
        self.proc = proc
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.points = read_points(output_path)
        self.detection = None
        for line in proc.stdout.splitlines():
            if line.startswith(DETECTION_MARK):
                self.detection = json.loads(line[len(DETECTION_MARK):])

    def series(self, name, source=None, rank=None):
        """{step: value} of one metric; asserts no (source, rank, step) repeats."""
        out = {}
        for p in self.points:
            if p["name"] != name or (source and p["source"] != source) or (rank is not None and p["rank"] != rank):
                continue
            assert p["step"] not in out, f"{name} reported twice at step {p['step']}: {p}"
            out[p["step"]] = p["value"]
        return out

    def names(self, source):
        return {p["name"] for p in self.points if p["source"] == source}

    def sources(self):
        return {p["source"] for p in self.points}

    def check_server(self, timeout=30):
        """The Lens server stored exactly the emitted points and the exact detection."""
        assert self.server is not None, "run(..., server=...) to check the server"
        expected = {}
        for p in self.points:
            expected.setdefault(p["source"], set()).add((p["name"], p["step"], p["rank"]))

        def stored():
            out = {}
            for source in expected:
                pts = exporter.metric_points(self.server, self.workload, data_source=source)
                out[source] = {(q["metric_name"], q["iteration"], q["rank"]) for q in pts}
            return out if out == expected else None

        got = exporter.wait_for(stored, timeout=timeout)
        assert got == expected, f"server points differ from emitted ones: {got} != {expected}"
        want = self.detection["detection"]

        def detected():
            det = (exporter.workload(self.server, self.workload) or {}).get("detection") or {}
            same = all(det.get(k) == want.get(k) for k in ("wrapper", "base", "method"))
            return det if same else None

        det = exporter.wait_for(detected, timeout=timeout)
        assert det, f"server detection {exporter.workload(self.server, self.workload).get('detection')} != {want}"
        return det

    def assert_each_point_once(self):
        """No (name, step, rank) is reported twice, whatever the data source."""
        seen = {}
        for p in self.points:
            key = (p["name"], p["step"], p["rank"])
            assert key not in seen, f"{key} reported twice: {seen[key]} and {p['source']}"
            seen[key] = p["source"]


def read_points(output_path):
    points = []
    for dirpath, _, files in os.walk(output_path):
        for name in files:
            if name == "wandb_metrics.jsonl":  # the points (wandb_run.jsonl next to it: run records)
                with open(os.path.join(dirpath, name), encoding="utf-8") as fh:
                    points.extend(json.loads(line) for line in fh if line.strip())
    return points


def run(code, tmp_path, roots, workload="standin", check=True, footer=True, server=None, **env_extra):
    """Run ``code`` with the stand-in ``roots`` importable; returns a :class:`Result`.

    ``server``: a real Lens server to report to as well (``workload`` must then be unique).
    """
    tmp_path.mkdir(parents=True, exist_ok=True)
    output = tmp_path / "lens-jsonl"
    env = exporter.exporter_env(server, tmp_path, workload, **env_extra)
    env.update({
        "PYTHONPATH": os.pathsep.join([root(r) for r in roots] + [os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "PRIMUS_LENS_WANDB_API_REPORTING": "true" if server is not None else "false",
        "PRIMUS_LENS_WANDB_OUTPUT_PATH": str(output),
        "STANDIN_TMP": str(tmp_path),
    })
    env.setdefault("PRIMUS_LENS_TESTING", "1")
    env.update({k: str(v) for k, v in env_extra.items()})
    source = textwrap.dedent(code) + (_FOOTER if footer else "")
    script = tmp_path / f"train_{abs(hash(source)) % 10**8}.py"
    script.write_text(source)
    proc = exporter.run_python(str(script), env, timeout=120, check=check, cwd=str(tmp_path))
    return Result(proc, str(output), server, workload)


def run_many(*calls):
    """Run several :func:`run` calls (dicts of its arguments) at once, e.g. the ranks of one
    job; returns their results in order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(run, **call) for call in calls]
        return [f.result() for f in futures]
