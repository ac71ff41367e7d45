"""``primus-lens replay``: upload local JSONL or a spool directory to Lens (idempotent: points
are upserted)."""

import glob
import json
import os
import sys
import time
from typing import Dict, Iterable, List, Optional, Tuple

# The JSONL sink's run and detection records, one request per line next to each rank's points.
from ..sinks.jsonl import RECORDS_FILE
from ..sinks.payload import as_points, has_rows
from .output import request_error


def _jsonl_files(path: str) -> List[str]:
    """The JSONL files under ``path``; for one points file, also its run records next to it."""
    if os.path.isfile(path):
        records = os.path.join(os.path.dirname(path), RECORDS_FILE)
        return [path] + ([records] if os.path.basename(path) != RECORDS_FILE and os.path.isfile(records) else [])
    return sorted(glob.glob(os.path.join(path, "**", "*.jsonl"), recursive=True))


def _spool_files(path: str) -> List[str]:
    """Spool files under ``path``: waiting ones, claims of processes that are gone, and ``rejected/``.

    ``rejected/`` holds batches Lens refused as a whole (or, from older versions, for a bad
    token): after the cause is fixed, replay sends them like any other.
    """
    from ..sinks.spool import Spool

    if os.path.isfile(path) and (path.endswith(".json") or ".claimed-" in path):
        return [path]
    out = []
    for directory in (path, os.path.join(path, "rejected")):
        spool = Spool(directory)
        out.extend(spool.files())
        out.extend(c["file"] for c in spool.claims() if c["pid"] is not None and not c["alive"])
    return sorted(out, key=os.path.basename)


def _jsonl_requests(files: Iterable[str], batch_size: int) -> Iterable[Tuple[str, Dict, int]]:
    """The requests that rebuild what the JSONL files hold: each file's run and detection
    records as they were written, then its points grouped by run and rank."""
    groups: Dict[tuple, Dict] = {}
    for path in files:
        with open(path, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise ValueError("not an object")
                except ValueError:
                    print(f"skipping {path}:{line_no}: not a JSON object", file=sys.stderr)
                    continue
                if "endpoint" in row and isinstance(row.get("payload"), dict):
                    yield row["endpoint"], row["payload"], 0
                    continue
                key = (row.get("workload_uid"), row.get("source", "wandb"), row.get("run_id", ""), row.get("rank", 0))
                group = groups.get(key)
                if group is None:
                    group = groups[key] = {
                        "source": key[1], "workload_uid": key[0], "pod_name": row.get("pod_name", ""),
                        "run_id": key[2], "rank": key[3], "local_rank": row.get("local_rank", 0),
                        "node_rank": row.get("node_rank", 0), "world_size": row.get("world_size", 1),
                        "timestamp": time.time(), "metrics": []}
                group["metrics"].append({k: row[k] for k in ("name", "value", "step", "timestamp") if k in row})
                if len(group["metrics"]) >= batch_size:
                    yield "/wandb/metrics", groups.pop(key), batch_size
    for group in groups.values():
        yield "/wandb/metrics", group, len(group["metrics"])


def _ordered(files: List[str]) -> List[str]:
    """Each directory's run/detection records before its points: Lens knows the run (its
    config, its framework) from the first point on."""
    return sorted(files, key=lambda f: (os.path.dirname(f), os.path.basename(f) != RECORDS_FILE, f))


class Sender:
    """POSTs one request, retrying what may succeed later: no connection, a timeout, 429 and
    5xx (Lens restarting, a proxy in front of it), with exponential backoff (Retry-After when
    Lens sends one).  Other answers (400, 401, 413 ...) do not change on a retry: failed at once.
    Counts every retry."""

    def __init__(self, session, base: str, retries: int, backoff: float, log):
        self.session, self.base, self.retries, self.backoff, self.log = session, base, retries, backoff, log
        self.retried = 0

    def post(self, endpoint: str, payload: Dict) -> Optional[str]:
        """None when Lens took it, else the last error."""
        import requests

        for attempt in range(self.retries + 1):
            wait = None
            try:
                response = self.session.post(self.base + endpoint, json=payload, timeout=60)
                if response.status_code < 300:
                    return None
                error = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code == 429 or response.status_code >= 500:
                    wait = _retry_after(response.headers.get("Retry-After"))
                else:
                    return error
            except requests.RequestException as exc:
                error = request_error(exc)
            if attempt == self.retries:
                return error
            wait = min(self.backoff * 2 ** attempt, 30.0) if wait is None else min(wait, 60.0)
            self.retried += 1
            self.log(f"{endpoint}: {error}; retry {attempt + 1}/{self.retries} in {wait:.1f} s")
            time.sleep(wait)
        return error


def _retry_after(value: Optional[str]) -> Optional[float]:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: use the backoff


def cmd_replay(args) -> int:
    import requests

    from ..core.config import load_config
    from ..limits import MAX_POINTS_PER_REQUEST
    from .output import Progress, print_json

    config = load_config()
    base = (args.url or config.api_base_url).rstrip("/")
    token = args.token or config.api_token
    session = requests.Session()
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    spool_files = _spool_files(args.path)
    jsonl = _jsonl_files(args.path) if not spool_files else []
    if not spool_files and not jsonl:
        print(f"nothing to replay under {args.path} (expected spool *.json files or *.jsonl)", file=sys.stderr)
        return 2
    work: List[Tuple[str, Dict, int, Optional[str]]] = []
    for path in spool_files:
        try:
            with open(path, "rb") as fh:
                record = json.loads(fh.read())
            payload = record["payload"]
            if has_rows(payload):  # as points: what every Lens server reads, old ones too (protocol.md, Rows)
                payload = as_points(payload)
            metrics = payload.get("metrics")
            if isinstance(metrics, list) and len(metrics) > MAX_POINTS_PER_REQUEST:
                # A file of an older version, bigger than Lens takes in one request.
                for start in range(0, len(metrics), MAX_POINTS_PER_REQUEST):
                    part = metrics[start:start + MAX_POINTS_PER_REQUEST]
                    work.append((record["endpoint"], dict(payload, metrics=part), len(part), path))
            else:
                work.append((record["endpoint"], payload, int(record.get("points") or 0), path))
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            print(f"skipping unreadable {path}: {exc!r}", file=sys.stderr)
    for endpoint, payload, points in _jsonl_requests(_ordered(jsonl), args.batch_size):
        work.append((endpoint, payload, points, None))
    counts = {"points_sent": 0, "points_failed": 0, "requests_sent": 0, "requests_failed": 0,
              "run_records": 0, "detection_records": 0}
    failed_paths = set()
    last_part = {path: index for index, (_e, _p, _n, path) in enumerate(work) if path}
    with Progress(sum(w[2] for w in work)) as progress:
        sender = Sender(session, base, args.retries, args.retry_wait, progress.log)
        for index, (endpoint, payload, points, path) in enumerate(work):
            error = sender.post(endpoint, payload)
            if error is None:
                counts["requests_sent"] += 1
                counts["points_sent"] += points
                kind = {"/wandb/run": "run_records", "/wandb/detection": "detection_records"}.get(endpoint)
                if kind:
                    counts[kind] += 1
                if path and args.delete and last_part[path] == index and path not in failed_paths:
                    os.remove(path)
            else:
                failed_paths.add(path)
                counts["requests_failed"] += 1
                counts["points_failed"] += points
                progress.log(f"failed {endpoint} ({points} points): {error}")
            progress.advance(points)
    counts["retries"] = sender.retried
    code = 0 if not counts["requests_failed"] else 1
    if args.json:
        print_json({"url": base, "path": args.path, **counts, "ok": code == 0})
    else:
        failed = (f"{counts['requests_failed']} failed ({counts['points_failed']} points)"
                  if counts["requests_failed"] else "0 failed")
        print(f"replayed {counts['points_sent']} points to {base} in {counts['requests_sent']} requests "
              f"({counts['run_records']} run and {counts['detection_records']} detection records): "
              f"{counts['retries']} retried, {failed}; re-running is safe (points are upserted)")
    return code


def register(sub) -> None:
    """``primus-lens replay``."""
    replay = sub.add_parser(
        "replay", help="upload local JSONL or a spool directory to Lens (idempotent)",
        description="Upload what the exporter kept locally to Lens: a spool directory (batches it could not "
                    "deliver, with their run and detection records) or the JSONL output "
                    "(PRIMUS_LENS_WANDB_OUTPUT_PATH: points, and the run and detection records next to them). "
                    "Points are upserted, so running it twice stores nothing twice.")
    replay.add_argument("path", help="a wandb_metrics.jsonl file, an output directory, or a spool directory")
    replay.add_argument("--url", help="Lens API base URL (default: $PRIMUS_LENS_API_BASE_URL)")
    replay.add_argument("--token", help="bearer token (default: $PRIMUS_LENS_API_TOKEN)")
    replay.add_argument("--batch-size", type=int, default=5000,
                        help="points per request when sending JSONL (default 5000)")
    replay.add_argument("--retries", type=int, default=5,
                        help="retries per request on no connection, a timeout, 429 or 5xx (default 5)")
    replay.add_argument("--retry-wait", type=float, default=1.0, metavar="SECONDS",
                        help="wait before the first retry, doubled after each (at most 30 s; default 1)")
    replay.add_argument("--delete", action="store_true", help="delete spool files once delivered")
    replay.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    replay.set_defaults(func=cmd_replay)
