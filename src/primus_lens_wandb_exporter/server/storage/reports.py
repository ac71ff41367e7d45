"""Detection and run reports at ingest: read-modify-write upserts, serialised per workload
by the ``workloads`` row lock the ingest transaction takes before them."""

from __future__ import annotations

from .backend import Backend
from .model import _json, _unjson


class Reports(Backend):
    """The detections table (and the best detection kept on the workload row) and the runs table."""

    def _insert_detection(self, cur, d: dict, now: float) -> None:
        det = d.get("detection") or {}
        method = det.get("method") or ""
        conf = det.get("confidence")
        conf = float(conf) if conf is not None else 0.0
        reported = d.get("timestamp_ms") or now
        self._ex(cur, "INSERT INTO detections (workload_uid, source, type, version, pod_name, rank, run_id, "
                      "wrapper, base, method, confidence, evidence, hints, reported_at) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (d["workload_uid"], d.get("source", "wandb"), d.get("type", ""), d.get("version", ""),
                  d.get("pod_name", ""), d.get("rank", 0), d.get("run_id", ""), det.get("wrapper"), det.get("base"),
                  method, conf, _json(d.get("evidence")), _json(d.get("hints")), reported))
        # Best report per workload, kept on the workload row so listings need no scan:
        # exact beats heuristic, then one naming both layers (wrapper and base) beats one
        # naming fewer, then higher confidence, then newer.
        self._ex(cur, "SELECT det_method, det_confidence, det_reported_at, det_wrapper, det_base "
                      "FROM workloads WHERE workload_uid = ?", (d["workload_uid"],))
        row = cur.fetchone()
        cur_rank = ((row[0] == "exact", (row[3] is not None) + (row[4] is not None), row[1] or 0.0, row[2] or 0.0)
                    if row and row[0] is not None else None)
        new_rank = (method == "exact", bool(det.get("wrapper")) + bool(det.get("base")), conf, reported)
        if cur_rank is None or new_rank >= cur_rank:
            self._ex(cur, "UPDATE workloads SET det_wrapper = ?, det_base = ?, det_method = ?, det_confidence = ?, "
                          "det_reported_at = ?, det_evidence = ?, det_hints = ? WHERE workload_uid = ?",
                     (det.get("wrapper"), det.get("base"), method, conf, reported, _json(d.get("evidence")),
                      _json(d.get("hints")), d["workload_uid"]))

    _RUN_FIELDS = ("project", "name", "entity", "grp", "mode", "status", "exit_code", "source", "rank")

    def _upsert_run(self, cur, r: dict, now: float) -> None:
        uid, run_id = r["workload_uid"], r.get("run_id", "")
        ts = r.get("timestamp_ms") or now
        self._ex(cur, "SELECT project, name, entity, grp, mode, status, exit_code, source, rank, tags, config, "
                      "summary, started_at, finished_at FROM runs WHERE workload_uid = ? AND run_id = ?",
                 (uid, run_id))
        row = cur.fetchone()
        old = dict(zip(self._RUN_FIELDS + ("tags", "config", "summary", "started_at", "finished_at"), row)) \
            if row else {}
        new = dict(old)
        for f in self._RUN_FIELDS:
            src = "group" if f == "grp" else f
            if r.get(src) is not None:
                new[f] = r[src]
        if r.get("tags") is not None:
            new["tags"] = _json(r["tags"])
        for f in ("config", "summary"):
            if r.get(f) is not None:
                merged = _unjson(old.get(f)) or {}
                merged.update(r[f])
                new[f] = _json(merged)
        if r.get("summary_removed"):  # keys W&B deleted from the summary (merged above, removed here)
            kept = _unjson(new.get("summary")) or {}
            for key in r["summary_removed"]:
                kept.pop(key, None)
            new["summary"] = _json(kept)
        event = r.get("event")
        status = r.get("status")
        if not row:
            new["started_at"] = ts
            new.setdefault("status", "running")
            if new.get("status") is None:
                new["status"] = "running"
        if event == "finished" or status in ("finished", "failed", "crashed", "killed"):
            new["finished_at"] = ts
            if status is None:
                new["status"] = "finished"
        vals = (uid, run_id, new.get("project"), new.get("name"), new.get("entity"), new.get("grp"),
                new.get("mode"), new.get("status"), new.get("exit_code"), new.get("source") or "wandb",
                new.get("rank") or 0, new.get("tags"), new.get("config"), new.get("summary"),
                new.get("started_at"), new.get("finished_at"), ts)
        self._ex(cur, "INSERT INTO runs (workload_uid, run_id, project, name, entity, grp, mode, status, exit_code, "
                      "source, rank, tags, config, summary, started_at, finished_at, updated_at) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                      "ON CONFLICT (workload_uid, run_id) DO UPDATE SET project = excluded.project, "
                      "name = excluded.name, entity = excluded.entity, grp = excluded.grp, mode = excluded.mode, "
                      "status = excluded.status, exit_code = excluded.exit_code, source = excluded.source, "
                      "rank = excluded.rank, tags = excluded.tags, config = excluded.config, "
                      "summary = excluded.summary, started_at = excluded.started_at, "
                      "finished_at = excluded.finished_at, updated_at = excluded.updated_at", vals)
