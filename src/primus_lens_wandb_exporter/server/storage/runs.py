"""The runs table (``GET /api/v1/runs``): one row per workload, filtered, sorted, grouped
and paged in SQL on both databases.

A row is a workload (one training job, what Compare overlays) shown through its
*primary* W&B run: the run of its lowest rank (then the earliest started), since every
rank of a Lens workload is a W&B run of its own with the same project, name and config.
The filter syntax and its SQL are :mod:`.runs_filter`; docs/protocol.md documents both.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import orjson

from .backend import Backend
from .model import _unjson
from .runs_filter import JSON_COLUMNS, LAST_STEP_SQL, Dialect, FilterError, Term, compile_terms, parse_path

#: Groups an answer lists at most (``groups_truncated`` says when there were more).
MAX_GROUPS = 1000
#: Workloads whose config/summary keys ``run_keys`` reads (the most recently updated).
KEYS_SAMPLE = 2000
MAX_KEYS = 1000

_FROM_RUNS = ("FROM workloads w LEFT JOIN runs r ON r.workload_uid = w.workload_uid AND r.run_id = "
         "(SELECT r2.run_id FROM runs r2 WHERE r2.workload_uid = w.workload_uid "
         "ORDER BY r2.rank, r2.started_at, r2.run_id LIMIT 1)")
#: Sortable plain fields -> their SQL (besides config.<key> / summary.<key>).
SORTS = {"updated": "w.last_update", "workload": "w.workload_uid", "project": "r.project", "name": "r.name",
         "state": "r.status", "framework": "COALESCE(w.det_wrapper, w.det_base)", "step": LAST_STEP_SQL,
         "started": "r.started_at", "group": "r.grp", "entity": "r.entity"}
GROUPS = {"project": "r.project", "name": "r.name", "state": "r.status", "group": "r.grp",
          "entity": "r.entity", "framework": "COALESCE(w.det_wrapper, w.det_base)"}
_COLS = ("w.workload_uid, r.run_id, r.rank, r.project, r.name, r.entity, r.grp, r.tags, r.status, r.mode, "
         "w.det_wrapper, w.det_base, w.det_method, w.det_confidence, r.started_at, r.finished_at, "
         "w.first_seen, w.last_update, "
         "(SELECT COUNT(*) FROM runs r3 WHERE r3.workload_uid = w.workload_uid), " + LAST_STEP_SQL)


def _json_key(token: str, key: str) -> Tuple[str, Tuple[str, ...]]:
    field, path = parse_path(token, key)
    if field not in JSON_COLUMNS:
        raise FilterError(token, f"{key!r} is not a config.<key> or summary.<key>")
    return field, path


class Runs(Backend):
    """What ``/api/v1/runs`` and ``/api/v1/runs/keys`` read."""

    #: The JSON expressions of this database (set by each backend).
    dialect: Dialect

    def _order_exprs(self, key: str) -> Tuple[List[str], list]:
        """SQL expressions (numbers first, then the JSON text) ordering by ``key``."""
        if key in SORTS:
            return [SORTS[key]], []
        field, path = _json_key(key, key)
        col = self.dialect.col(field)
        num, p1 = self.dialect.json_number(col, path)
        val, p2 = self.dialect.json_value(col, path)
        return [num, val], p1 + p2

    def list_runs(self, terms: Sequence[Term], sort: str = "updated", order: str = "desc", limit: int = 100,
                  offset: int = 0, group_by: Optional[str] = None,
                  columns: Optional[Sequence[str]] = None) -> dict:
        """The rows matching ``terms`` (see :mod:`.runs_filter`), with the total and, with
        ``group_by``, the groups and their counts.  ``columns``: ``None`` returns each row's
        whole config and summary; else only those named (``config``, ``summary`` whole, or
        ``config.<key>`` / ``summary.<key>`` values under ``values``)."""
        where, wparams = compile_terms(list(terms), self.dialect)
        frm = _FROM_RUNS + self.dialect.from_extra  # the FROM clause on this database
        d = "DESC" if order == "desc" else "ASC"
        sort_exprs, sort_params = self._order_exprs(sort)
        order_sql = [f"{e} {d} NULLS LAST" for e in sort_exprs]
        order_params = list(sort_params)
        gsel, gparams, gorder, gorder_params = None, [], [], []
        if group_by:
            if group_by in GROUPS:
                gsel, gorder = GROUPS[group_by], [GROUPS[group_by]]
            else:
                field, path = _json_key(group_by, group_by)
                gsel, gparams = self.dialect.json_value(self.dialect.col(field), path)
                num, nparams = self.dialect.json_number(self.dialect.col(field), path)
                gorder, gorder_params = [num, gsel], nparams + gparams
        whole = {"config", "summary"} if columns is None else {c for c in columns if c in JSON_COLUMNS}
        picked: List[Tuple[str, str, list]] = []
        for c in columns or ():
            if c not in JSON_COLUMNS:
                field, path = _json_key(c, c)
                expr, p = self.dialect.json_value(self.dialect.col(field), path)
                picked.append((c, expr, p))
        sel = _COLS + "".join(f", r.{c}" for c in sorted(whole)) + "".join(f", {e}" for _, e, _ in picked)
        sel_params = [p for _, _, ps in picked for p in ps]
        if gsel:
            sel += f", {gsel}"
            sel_params += gparams
        full_order = [f"{e} ASC NULLS LAST" for e in gorder] + order_sql + ["w.workload_uid ASC"]
        # Two steps: the page's workload uids in order, with the total (one pass of the filter:
        # COUNT(*) OVER () is the count before LIMIT), then the row details of only those
        # (the per-row subqueries and JSON extractions run for one page, not every match).
        page_sql = (f"SELECT w.workload_uid, COUNT(*) OVER () {frm} WHERE {where} "
                    f"ORDER BY {', '.join(full_order)} LIMIT ? OFFSET ?")
        with self.read_cursor() as cur:
            self._ex(cur, page_sql, wparams + gorder_params + order_params + [limit, offset])
            page = cur.fetchall()
            if page:
                total = page[0][1]
            else:  # past the end (or nothing matches): the total still counts
                self._ex(cur, f"SELECT COUNT(*) {frm} WHERE {where}", wparams)
                total = cur.fetchone()[0]
            rows = []
            if page:
                uids = [p[0] for p in page]
                self._ex(cur, f"SELECT {sel} {frm} WHERE w.workload_uid IN ({', '.join('?' * len(uids))})",
                         sel_params + uids)
                by_uid = {r[0]: r for r in cur.fetchall()}
                rows = [by_uid[u] for u in uids if u in by_uid]
            groups = None
            if gsel:
                # Grouped in an outer query: PostgreSQL cannot tell that two expressions with
                # their own parameters are the same, so the inner one names them once.
                inner = ", ".join(f"{e} AS o{k}" for k, e in enumerate(gorder))
                gsql = (f"SELECT g, COUNT(*) FROM (SELECT {gsel} AS g, {inner} {frm} WHERE {where}) x "
                        "GROUP BY g ORDER BY " + ", ".join(f"MIN(o{k}) ASC NULLS LAST" for k in range(len(gorder)))
                        + f" LIMIT {MAX_GROUPS + 1}")
                self._ex(cur, gsql, gparams + gorder_params + wparams)
                groups = cur.fetchall()
        json_group = bool(gsel) and group_by not in GROUPS
        out = []
        n = 20  # the columns of _COLS
        for r in rows:
            item = {"workload_uid": r[0], "run_id": r[1], "rank": r[2], "project": r[3], "name": r[4],
                    "entity": r[5], "group": r[6], "tags": _unjson(r[7]) or [], "state": r[8], "mode": r[9],
                    "wrapper": r[10], "base": r[11], "method": r[12] or None, "confidence": r[13],
                    "started_at": r[14], "finished_at": r[15], "first_seen": r[16], "updated_at": r[17],
                    "runs": r[18], "last_step": r[19]}
            i = n
            for c in sorted(whole):
                item[c] = _unjson(r[i]) or {}
                i += 1
            if picked:
                item["values"] = {c: _unjson(r[i + k]) for k, (c, _, _) in enumerate(picked)}
                i += len(picked)
            if gsel:
                item["group_value"] = _unjson(r[i]) if json_group else r[i]
            out.append(item)
        answer = {"runs": out, "total_count": total, "limit": limit, "offset": offset}
        if groups is not None:
            answer["group_by"] = group_by
            answer["groups"] = [{"value": _unjson(g[0]) if json_group else g[0], "count": g[1]}
                                for g in groups[:MAX_GROUPS]]
            answer["groups_truncated"] = len(groups) > MAX_GROUPS
        return answer

    def run_keys(self) -> Dict[str, List[str]]:
        """The flattened config and summary keys (``a.b``) of the primary runs of the
        :data:`KEYS_SAMPLE` most recently updated workloads, sorted."""
        keys: Dict[str, set] = {"config": set(), "summary": set()}
        with self.read_cursor() as cur:
            self._ex(cur, f"SELECT r.config, r.summary {_FROM_RUNS} ORDER BY w.last_update DESC LIMIT ?",
                     (KEYS_SAMPLE,))
            rows = cur.fetchall()
        for config, summary in rows:
            for field, text in (("config", config), ("summary", summary)):
                if text:
                    _flatten_keys(orjson.loads(text), "", keys[field])
        return {k: sorted(v)[:MAX_KEYS] for k, v in keys.items()}


def _flatten_keys(value, prefix: str, out: set) -> None:
    # Nested objects become a.b.c (W&B's column names); lists and scalars are leaves.
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten_keys(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif prefix:
        out.add(prefix)
