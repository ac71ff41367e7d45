"""The sink seam: sinks are objects built by ``lens_make_sinks`` from the config, once per process."""

import json
import os

from helpers.exporter import run_python

from primus_lens_wandb_exporter.core.config import Config
from primus_lens_wandb_exporter.core.hookspecs import hookimpl
from primus_lens_wandb_exporter.core.identity import load_identity
from primus_lens_wandb_exporter.core.registry import create_plugin_manager
from primus_lens_wandb_exporter.core.recorder import Recorder


class ListSink:
    """A third-party sink object: keeps what the recorder hands it."""

    name = "listsink"

    def __init__(self, config, identity):
        self.config, self.identity = config, identity
        self.points, self.detections, self.runs, self.flushes = [], [], [], 0
        self.pid = os.getpid()

    def report_metrics(self, batch):
        self.points.extend((p["name"], p["step"], p["value"]) for p in batch.points)

    def report_detection(self, detection):
        self.detections.append(detection)

    def report_run(self, run, event):
        self.runs.append(event)

    def flush(self, deadline):
        self.flushes += 1

    def stats(self):
        return {"points": len(self.points), "pid": self.pid}

    def close(self):
        pass


class ListSinkPlugin:
    """Builds one ListSink per call (per process), from the config it is given."""

    def __init__(self):
        self.made = []

    @hookimpl
    def lens_make_sinks(self, config, identity, on_problem):
        sink = ListSink(config, identity)
        self.made.append(sink)
        return [sink]


def _recorder(plugin, pod="sink-0"):
    pm = create_plugin_manager(disabled=("*",))
    pm.register(plugin, name="listsink")
    return Recorder(Config(api_reporting=False, batch_size=50, flush_interval=0.05),
                    load_identity({"POD_NAME": pod}), pm)


def test_a_third_party_lens_make_sinks_plugin_gets_the_batches_built_once(tmp_path):
    plugin = ListSinkPlugin()
    rec = _recorder(plugin)
    for step in range(3):
        rec.record({"loss": float(step)}, step=step, source="custom")
    assert rec.flush(10)
    rec.record({"loss": 9.0}, step=3, source="custom")
    assert rec.flush(10)
    assert len(plugin.made) == 1  # once per process, not per batch or per flush
    sink = plugin.made[0]
    assert sink.config is rec.config and sink.identity is rec.identity
    assert sorted(sink.points) == [("loss", 0, 0.0), ("loss", 1, 1.0), ("loss", 2, 2.0), ("loss", 3, 9.0)]
    assert sink.flushes == 2
    assert rec.stats()["listsink"] == {"points": 4, "pid": os.getpid()}
    assert rec.stats()["http"] is None and rec.stats()["jsonl"] is None  # built-ins off in this config


FORK_SCENARIO = """
import json, os, sys
sys.path[:0] = sys.argv[1:]
from test_sinks import ListSinkPlugin, _recorder
from primus_lens_wandb_exporter.core.recorder import reset_recorder
plugin = ListSinkPlugin()
rec = _recorder(plugin, "fork-0")
reset_recorder(rec)  # the process-wide one: what the wandb patches hold, reset in a forked child
rec.record({"parent": 1.0}, step=0)
assert rec.flush(10)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    rec.record({"child": 2.0}, step=0)
    ok = rec.flush(10)
    os.write(w, json.dumps({"ok": ok, "pid": os.getpid(), "made": [s.pid for s in plugin.made],
                            "points": [s.points for s in plugin.made]}).encode())
    os._exit(0)
os.close(w)
child = json.loads(os.read(r, 1 << 16))
os.waitpid(pid, 0)
rec.record({"parent": 3.0}, step=1)
assert rec.flush(10)
print(json.dumps({"parent": os.getpid(), "child": child, "made": [s.pid for s in plugin.made],
                  "points": [s.points for s in plugin.made]}))
"""


def test_a_forked_child_builds_its_own_sinks_and_the_parent_keeps_its_own(tmp_path):
    env = dict(os.environ, PRIMUS_LENS_TESTING="1")
    out = run_python(FORK_SCENARIO, env, args=(os.path.dirname(__file__), os.path.dirname(os.path.dirname(__file__)))).stdout
    result = json.loads(out.strip().splitlines()[-1])
    child = result["child"]
    assert child["ok"]
    # The child inherited the parent's sink object and built one of its own for its points.
    assert child["made"] == [result["parent"], child["pid"]]
    assert child["points"][1] == [["child", 0, 2.0]]
    assert ["child", 0, 2.0] not in child["points"][0]
    # The parent still has exactly one sink, which got only the parent's points.
    assert result["made"] == [result["parent"]]
    assert result["points"] == [[["parent", 0, 1.0], ["parent", 1, 3.0]]]
