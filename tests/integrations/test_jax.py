"""JAX adapters (MaxText ``MetricLogger.write_metrics``, CLU ``MetricWriter.write_scalars``),
against stand-ins of named releases.  JAX is not installed here: ``standins/jax_standin`` provides
``jax.process_index()`` (from ``JAX_PROCESS_ID``) and ``jax.__version__`` only.

- ``maxtext_2026_01``: ``src/MaxText/metric_logger.py`` of AI-Hypercomputer/maxtext at
  b646a535 (2026-01-23): ``write_metrics(metrics, step, is_training=True)``, no W&B;
- ``maxtext_head``: ``src/maxtext/common/metric_logger.py`` at main e591f30c (2026-11):
  ``write_metrics(metrics, step, metric_type="train")``, ``wandb.log(flat, step=step)`` on
  process 0 when ``enable_wandb``;
- ``clu_v0_0_12``: ``clu/metric_writers`` of google/CommonLoopUtils v0.0.12-21-g04ad2f9 (2026-07).

Values are numpy scalars (what ``jax.device_get`` hands MaxText / CLU).
"""

import os

import pytest

# The stand-ins folder is never put on this process's sys.path (it holds directories
# named like real packages); only the programs under test see the stand-in roots.
from helpers import standins  # noqa: E402
from helpers.e2e import module_server, new_workload  # noqa: E402,F401  (a real Lens server per module)

pytest.importorskip("numpy")

MAXTEXT_LOOP = """
import datetime, os, types
import numpy as np
import jax
%s
config = types.SimpleNamespace(enable_tensorboard=True, enable_wandb=os.environ.get("WB") == "1",
                               wandb_project_name="mt", wandb_run_name="run", base_output_directory=os.environ["STANDIN_TMP"])
logger = metric_logger.MetricLogger(config, learning_rate_schedule=lambda step: 1e-3 * (step + 1))
rng = np.random.default_rng(0)
for step in range(4):
    metrics = {"scalar": {"learning/loss": np.float32(2.0 - 0.1 * step), "learning/grad_norm": np.float32(rng.random()),
                          "learning/total_weights": np.int32(512)}}
    %s(metrics, step, datetime.timedelta(seconds=0.5))
logger.flush_metrics_and_cleanup()
"""

MAXTEXT_NAMES = {"learning/loss", "learning/grad_norm", "learning/total_weights", "perf/step_time_seconds",
                 "learning/current_learning_rate"}


def test_maxtext_reports_scalars_from_process_0_only(module_server, tmp_path):
    code = MAXTEXT_LOOP % ("from MaxText import metric_logger", "logger.buffer_and_write_train_metrics")
    uid = new_workload("maxtext")
    results = standins.run_many(*[dict(code=code, tmp_path=tmp_path / f"p{index}", roots=["jax_standin", "maxtext_2026_01"],
                                      workload=uid, server=module_server, JAX_PROCESS_ID=index, JAX_NUM_PROCESSES=2)
                                 for index in (0, 1)])
    assert results[1].points == []
    first = results[0]
    det = first.detection["detection"]
    assert (det["base"], det["method"]) == ("maxtext", "exact")
    assert first.detection["evidence_base"]["maxtext"]["jax_version"] == "0.8.1"
    assert first.names("maxtext") == MAXTEXT_NAMES
    # MaxText's one-entry buffer writes step N when step N+1 arrives: steps are the real ones.
    assert first.series("learning/loss") == pytest.approx({0: 2.0, 1: 1.9, 2: 1.8, 3: 1.7})
    assert first.series("learning/current_learning_rate") == pytest.approx({0: 1e-3, 1: 2e-3, 2: 3e-3, 3: 4e-3})
    assert {p["rank"] for p in first.points} == {0}
    first.assert_each_point_once()
    first.check_server()


def test_maxtext_head_with_wandb_leaves_the_metrics_to_the_wandb_stream(module_server, tmp_path):
    pytest.importorskip("wandb")
    # maxtext.common.metric_logger is watched once the MAXTEXT integration declares it
    # (core/index.py); until then the program hands the module to the adapter itself.
    hook = """from maxtext.common import metric_logger
from primus_lens_wandb_exporter.core import index
if "maxtext.common.metric_logger" not in index.WATCHED:
    from primus_lens_wandb_exporter.core import registry
    from primus_lens_wandb_exporter.integrations.jax import MAXTEXT
    registry.run_watch(MAXTEXT, None, metric_logger)"""
    code = MAXTEXT_LOOP % (hook, "logger.buffer_and_write_metrics")
    result = standins.run(code, tmp_path, ["jax_standin", "maxtext_head"],
                         workload=new_workload("maxtext-wb"), server=module_server, WB=1)
    det = result.detection["detection"]
    assert (det["base"], det["method"]) == ("maxtext", "exact")
    assert result.sources() == {"wandb"}
    assert result.names("wandb") == MAXTEXT_NAMES
    assert sorted(result.series("learning/loss", source="wandb")) == [0, 1, 2, 3]
    result.assert_each_point_once()
    result.check_server()


CLU_LOOP = """
import numpy as np
import jax
from clu import metric_writers

writer = metric_writers.create_default_writer(just_logging=jax.process_index() > 0)
plain = metric_writers.MultiWriter([metric_writers.LoggingWriter(), metric_writers.LoggingWriter()])
for step in range(1, 6):
    writer.write_scalars(step, {"train_loss": np.float32(1.0 / step), "train_accuracy": np.float64(0.1 * step)})
    if step %% 5 == 0:
        plain.write_scalars(step, {"eval_loss": np.float32(0.5)})
writer.flush()
%s
"""


def test_clu_reports_each_scalar_once_at_the_outermost_writer(module_server, tmp_path):
    # AsyncMultiWriter -> AsyncWriter (thread pool) -> LoggingWriter, and a MultiWriter of
    # two LoggingWriters: every scalar is reported once per step.  CLU's own error (a
    # non-numeric scalar LoggingWriter cannot format) reaches the program untouched.
    tail = """
try:
    metric_writers.LoggingWriter().write_scalars(7, {"bad": "not-a-number"})
except ValueError as exc:
    print("FRAMEWORK-ERROR", type(exc).__name__)
"""
    result = standins.run(CLU_LOOP % tail, tmp_path, ["jax_standin", "clu_v0_0_12"], workload=new_workload("clu"), server=module_server)
    det = result.detection["detection"]
    assert (det["base"], det["method"]) == ("jax", "exact")
    assert result.detection["evidence_base"]["jax"]["library"] == "clu"
    assert result.names("clu") == {"train_loss", "train_accuracy", "eval_loss"}
    assert result.series("train_loss") == pytest.approx({1: 1.0, 2: 0.5, 3: 1 / 3, 4: 0.25, 5: 0.2})
    assert result.series("eval_loss") == {5: 0.5}
    assert "FRAMEWORK-ERROR ValueError" in result.stdout
    assert result.detection["our_errors"] == 0
    result.assert_each_point_once()
    result.check_server()


def test_clu_on_other_processes_only_claims(tmp_path):
    result = standins.run(CLU_LOOP % "", tmp_path, ["jax_standin", "clu_v0_0_12"], workload="clu-p1", JAX_PROCESS_ID=1)
    assert result.points == []
    assert result.detection["detection"]["base"] == "jax"


BROKEN = """
from primus_lens_wandb_exporter.core.recorder import get_recorder
def _broken(*args, **kwargs):
    raise ValueError("simulated exporter bug")
get_recorder().record = _broken
try:
    writer.write_scalars(6, {"train_loss": np.float32(0.1)})
    writer.flush()
    print("TRAINING-DONE")
except ValueError as exc:
    writer.flush()  # CLU's pool thread prints too: let it finish so the lines do not interleave
    print("OUR-ERROR-RAISED", exc)
"""


@pytest.mark.parametrize("testing, expected", [("0", "TRAINING-DONE"), ("1", "OUR-ERROR-RAISED simulated exporter bug")])
def test_clu_our_error_is_swallowed_unless_testing(tmp_path, testing, expected):
    result = standins.run(CLU_LOOP % BROKEN, tmp_path, ["jax_standin", "clu_v0_0_12"], workload="clu-err", PRIMUS_LENS_TESTING=testing)
    assert expected in result.stdout
    assert "[6] train_loss=0.1" in result.stdout  # CLU's own write ran either way


def test_clu_writer_classes_defined_by_the_program_are_wrapped_too(tmp_path):
    code = """
import numpy as np
from clu import metric_writers
from clu.metric_writers import interface

class CsvWriter(interface.MetricWriter):  # the program's own writer, defined after the import
    def __init__(self):
        self.rows = []
    def write_summaries(self, step, values, metadata=None):
        pass
    def write_scalars(self, step, scalars):
        self.rows.extend((step, k, float(v)) for k, v in scalars.items())
    def write_hparams(self, hparams):
        pass
    def flush(self):
        pass
    def close(self):
        pass

writer = metric_writers.MultiWriter([CsvWriter(), metric_writers.LoggingWriter()])
for step in (1, 2):
    writer.write_scalars(step, {"loss": np.float32(step)})
CsvWriter().write_scalars(3, {"loss": np.float32(3)})
"""
    result = standins.run(code, tmp_path, ["jax_standin", "clu_v0_0_12"], workload="clu-own")
    assert result.series("loss", source="clu") == {1: 1.0, 2: 2.0, 3: 3.0}
