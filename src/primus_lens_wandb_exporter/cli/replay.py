"""``primus-lens replay``: upload local JSONL or a spool directory to Lens (idempotent: points
are upserted)."""

import glob
import json
import os
import sys
import time
from typing import Dict, Iterable, List, Optional, Tuple

from .output import progress_bar


def _jsonl_files(path: str) -> List[str]:
    if os.path.isfile(path):
        return [path]
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
    groups: Dict[tuple, Dict] = {}
    for path in files:
        with open(path, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    print(f"skipping {path}:{line_no}: not JSON", file=sys.stderr)
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


def cmd_replay(args) -> int:
    import requests

    from ..limits import MAX_POINTS_PER_REQUEST

    from ..core.config import load_config

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
            payload, metrics = record["payload"], record["payload"].get("metrics")
            if isinstance(metrics, list) and len(metrics) > MAX_POINTS_PER_REQUEST:
                # A file of an older version, bigger than Lens takes in one request.
                for start in range(0, len(metrics), MAX_POINTS_PER_REQUEST):
                    part = metrics[start:start + MAX_POINTS_PER_REQUEST]
                    work.append((record["endpoint"], dict(payload, metrics=part), len(part), path))
            else:
                work.append((record["endpoint"], payload, int(record.get("points") or 0), path))
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            print(f"skipping unreadable {path}: {exc!r}", file=sys.stderr)
    for endpoint, payload, points in _jsonl_requests(jsonl, args.batch_size):
        work.append((endpoint, payload, points, None))
    total_points = sum(w[2] for w in work)
    progress = progress_bar(total_points)
    sent = failed = 0
    failed_paths = set()
    last_part = {path: index for index, (_e, _p, _n, path) in enumerate(work) if path}
    for index, (endpoint, payload, points, path) in enumerate(work):
        try:
            response = session.post(base + endpoint, json=payload, timeout=60)
            good = response.status_code < 300
            error = None if good else f"HTTP {response.status_code}: {response.text[:200]}"
        except requests.RequestException as exc:
            good, error = False, repr(exc)
        if good:
            sent += points
            if path and args.delete and last_part[path] == index and path not in failed_paths:
                os.remove(path)
        else:
            failed_paths.add(path)
            failed += points
            print(f"\nfailed {endpoint} ({points} points): {error}", file=sys.stderr)
        progress(points)
    progress(0, done=True)
    print(f"replayed {sent} points to {base} ({failed} failed); re-running is safe (points are upserted)")
    return 0 if not failed else 1


def register(sub) -> None:
    """``primus-lens replay``."""
    replay = sub.add_parser("replay", help="upload local JSONL or a spool directory to Lens (idempotent)")
    replay.add_argument("path", help="a wandb_metrics.jsonl file, an output directory, or a spool directory")
    replay.add_argument("--url", help="Lens API base URL (default: PRIMUS_LENS_API_BASE_URL)")
    replay.add_argument("--token", help="bearer token (default: PRIMUS_LENS_API_TOKEN)")
    replay.add_argument("--batch-size", type=int, default=5000)
    replay.add_argument("--delete", action="store_true", help="delete spool files once delivered")
    replay.set_defaults(func=cmd_replay)
