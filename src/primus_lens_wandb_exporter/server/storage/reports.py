"""Detection and run reports at ingest: read-modify-write upserts, serialised per workload
by the ``workloads`` row lock the ingest transaction takes before them."""

from __future__ import annotations

from .backend import Backend
from .model import _json, _unjson


class Reports(Backend):
    """The detections table (and the best detection kept on the workload row) and the runs table."""

    _DETECTION_COLS = (("workload_uid", "text"), ("source", "text"), ("type", "text"), ("version", "text"),
                       ("pod_name", "text"), ("rank", "bigint"), ("run_id", "text"), ("wrapper", "text"),
                       ("base", "text"), ("method", "text"), ("confidence", "float8"), ("evidence", "text"),
                       ("hints", "text"), ("reported_at", "float8"))

    def _insert_detections(self, cur, detections, now: float) -> None:
        """Store every report (one statement) and keep each workload's best on its row.

        The best is folded over the group first, then compared with the stored one once
        per workload: the same result as one report at a time (the last of the
        highest-ranked reports wins, and only if it ranks at least as high as the
        stored one), in two statements per workload instead of three per report: a
        fleet's ranks all report at start-up, 2,000 reports in a second or two.
        """
        if not detections:
            return
        rows = []
        best: dict = {}
        for d in detections:
            det = d.get("detection") or {}
            method = det.get("method") or ""
            conf = det.get("confidence")
            conf = float(conf) if conf is not None else 0.0
            reported = d.get("timestamp_ms") or now
            uid = d["workload_uid"]
            rows.append((uid, d.get("source", "wandb"), d.get("type", ""), d.get("version", ""), d.get("pod_name", ""),
                         d.get("rank", 0), d.get("run_id", ""), det.get("wrapper"), det.get("base"), method, conf,
                         _json(d.get("evidence")), _json(d.get("hints")), reported))
            # Best report per workload, kept on the workload row so listings need no scan:
            # exact beats heuristic, then one naming both layers (wrapper and base) beats one
            # naming fewer, then higher confidence, then newer.
            rank = (method == "exact", bool(det.get("wrapper")) + bool(det.get("base")), conf, reported)
            b = best.get(uid)
            if b is None or rank >= b[0]:
                best[uid] = (rank, rows[-1])
        self._insert_rows(cur, f"INSERT INTO detections ({', '.join(c for c, _ in self._DETECTION_COLS)})",
                          tuple(t for _, t in self._DETECTION_COLS), "", rows)
        for uid in sorted(best):
            new_rank, r = best[uid]
            self._ex(cur, "SELECT det_method, det_confidence, det_reported_at, det_wrapper, det_base "
                          "FROM workloads WHERE workload_uid = ?", (uid,))
            row = cur.fetchone()
            cur_rank = ((row[0] == "exact", (row[3] is not None) + (row[4] is not None), row[1] or 0.0, row[2] or 0.0)
                        if row and row[0] is not None else None)
            if cur_rank is None or new_rank >= cur_rank:
                self._ex(cur, "UPDATE workloads SET det_wrapper = ?, det_base = ?, det_method = ?, det_confidence = ?, "
                              "det_reported_at = ?, det_evidence = ?, det_hints = ? WHERE workload_uid = ?",
                         (r[7], r[8], r[9], r[10], r[13], r[11], r[12], uid))

    _RUN_FIELDS = ("project", "name", "entity", "grp", "mode", "status", "exit_code", "source", "rank")
    _RUN_READ = _RUN_FIELDS + ("tags", "config", "summary", "started_at", "finished_at")

    def _upsert_runs(self, cur, runs, now: float) -> None:
        """Merge run reports into their runs rows: each run read once and written once.

        A run's reports of one group (every rank of a job reports the same run at
        start-up) are folded in arrival order in memory, exactly as one report at a
        time would merge them into the stored row.
        """
        by_run: dict = {}
        for r in runs:
            by_run.setdefault((r["workload_uid"], r.get("run_id", "")), []).append(r)
        for uid, run_id in sorted(by_run):
            self._ex(cur, f"SELECT {', '.join(self._RUN_READ)} FROM runs WHERE workload_uid = ? AND run_id = ?",
                     (uid, run_id))
            row = cur.fetchone()
            state = dict(zip(self._RUN_READ, row)) if row else None
            for r in by_run[(uid, run_id)]:
                state, ts = self._merge_run(state, r, now)
            vals = (uid, run_id) + tuple(state.get(f) for f in self._RUN_READ) + (ts,)
            self._ex(cur, "INSERT INTO runs (workload_uid, run_id, project, name, entity, grp, mode, status, exit_code, "
                          "source, rank, tags, config, summary, started_at, finished_at, updated_at) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                          "ON CONFLICT (workload_uid, run_id) DO UPDATE SET project = excluded.project, "
                          "name = excluded.name, entity = excluded.entity, grp = excluded.grp, mode = excluded.mode, "
                          "status = excluded.status, exit_code = excluded.exit_code, source = excluded.source, "
                          "rank = excluded.rank, tags = excluded.tags, config = excluded.config, "
                          "summary = excluded.summary, started_at = excluded.started_at, "
                          "finished_at = excluded.finished_at, updated_at = excluded.updated_at", vals)

    def _merge_run(self, old, r: dict, now: float):
        """``(the run's row after report r, r's time)`` given the row before (None: no row yet)."""
        ts = r.get("timestamp_ms") or now
        new = dict(old) if old else {}
        for f in self._RUN_FIELDS:
            src = "group" if f == "grp" else f
            if r.get(src) is not None:
                new[f] = r[src]
        if r.get("tags") is not None:
            new["tags"] = _json(r["tags"])
        for f in ("config", "summary"):
            if r.get(f) is not None:
                merged = _unjson(new.get(f)) or {}
                merged.update(r[f])
                new[f] = _json(merged)
        if r.get("summary_removed"):  # keys W&B deleted from the summary (merged above, removed here)
            kept = _unjson(new.get("summary")) or {}
            for key in r["summary_removed"]:
                kept.pop(key, None)
            new["summary"] = _json(kept)
        event = r.get("event")
        status = r.get("status")
        if old is None:
            new["started_at"] = ts
            if new.get("status") is None:
                new["status"] = "running"
        if event == "finished" or status in ("finished", "failed", "crashed", "killed"):
            new["finished_at"] = ts
            if status is None:
                new["status"] = "finished"
        # What the row reads back as: the next report of the group merges into this.
        new["source"] = new.get("source") or "wandb"
        new["rank"] = new.get("rank") or 0
        return new, ts
