"""The local JSONL sink (``PRIMUS_LENS_WANDB_SAVE_LOCAL`` + ``PRIMUS_LENS_WANDB_OUTPUT_PATH``).

The user guide's layout ``node_<NODE_RANK>/rank_<LOCAL_RANK>/wandb_metrics.jsonl``, one
point per line.  Next to it, ``wandb_run.jsonl`` keeps the run records (config, summary,
lifecycle) and framework detections, one Lens request per line
(``{"endpoint": "/wandb/run", "payload": {...}}``, the spool's form), so that
``primus-lens replay`` rebuilds the whole run, not only its points.  Built by the recorder
(``lens_make_sinks``) once per process.
"""

import json
import os

from ..core.hookspecs import hookimpl
from ..core.log import get_logger
from ..wire import ENDPOINT_DETECTION, ENDPOINT_RUN

#: The run and detection records' file, in each rank's directory.
RECORDS_FILE = "wandb_run.jsonl"


class JsonlSink:
    """Appends every point to the guide's per-rank ``wandb_metrics.jsonl``."""

    name = "jsonl"

    def __init__(self, output_path: str):
        self.output_path = output_path
        self._files = {}
        self.lines = 0
        self.records = 0
        self.errors = 0

    def path_for(self, node_rank: int, local_rank: int) -> str:
        return os.path.join(self.output_path, f"node_{node_rank}", f"rank_{local_rank}", "wandb_metrics.jsonl")

    def report_metrics(self, batch):
        path = self.path_for(batch.node_rank, batch.local_rank)
        try:
            fh = self._files.get(path)
            if fh is None:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                fh = self._files[path] = open(path, "a", encoding="utf-8")
            ident = batch.identity
            head = {"workload_uid": ident.workload_uid, "pod_name": ident.pod_name, "source": batch.source,
                    "run_id": batch.run_id, "rank": batch.rank, "local_rank": batch.local_rank,
                    "node_rank": batch.node_rank, "world_size": batch.world_size}
            # Every line names its row: a point without one (row == step, see recorder) gets it here.
            lines = [json.dumps({**head, "row": point["step"], **point}, separators=(",", ":"))
                     for point in batch.points]
            fh.write("\n".join(lines) + "\n")
            fh.flush()
            self.lines += len(lines)
        except (OSError, TypeError, ValueError) as exc:
            self.errors += 1
            get_logger().error("local JSONL write to %s failed (counted): %r", path, exc)

    def report_detection(self, detection):
        self._write_record(ENDPOINT_DETECTION, detection)

    def report_run(self, run, event):
        self._write_record(ENDPOINT_RUN, run)

    def _write_record(self, endpoint, payload):
        """One request line in this rank's RECORDS_FILE (ranks from the environment: the
        records carry no node or local rank, and the launcher sets those)."""
        from ..core.identity import resolve_ranks

        ranks = resolve_ranks()
        path = os.path.join(os.path.dirname(self.path_for(ranks.node_rank, ranks.local_rank)), RECORDS_FILE)
        try:
            fh = self._files.get(path)
            if fh is None:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                fh = self._files[path] = open(path, "a", encoding="utf-8")
            fh.write(json.dumps({"endpoint": endpoint, "payload": payload}, separators=(",", ":"), default=str)
                     + "\n")
            fh.flush()
            self.records += 1
        except (OSError, TypeError, ValueError) as exc:
            self.errors += 1
            get_logger().error("local JSONL write to %s failed (counted): %r", path, exc)

    def flush(self, deadline=None):
        for fh in self._files.values():
            try:
                fh.flush()
            except OSError:
                self.errors += 1

    def stats(self):
        return {"output_path": self.output_path, "lines": self.lines, "records": self.records, "errors": self.errors}

    def close(self):
        """A forked child's copy: its open files are the parent's; the child opens its own."""
        self._files = {}


@hookimpl
def lens_make_sinks(config):
    return [JsonlSink(config.output_path)] if config.local_enabled else None
