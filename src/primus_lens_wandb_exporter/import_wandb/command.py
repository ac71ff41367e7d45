"""The ``primus-lens import-wandb`` command: arguments, progress bars and the per-run and
total summary lines (``--json``: the same as a document on stdout)."""

import json
import os
import sys
from typing import Dict, List

from .. import limits
from .importer import RunImporter, RunResult
from .reader import MissingWandb, WandbFileError, _wandb_proto, find_run_files
from .sender import Sender



def _progress_factory(stream):
    """A per-file byte progress bar (rich, as the CLI's other bars) on a terminal, nothing
    otherwise (the per-run summary line is printed either way)."""
    if not stream.isatty():
        return lambda total, desc: (lambda n: None, lambda: None)
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    def bar(total, desc):
        progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                            console=Console(file=stream), transient=True)
        task = progress.add_task(desc, total=total)
        progress.start()
        return (lambda n: progress.update(task, advance=n)), progress.stop
    return bar


def cmd_import_wandb(args) -> int:
    """Entry point of ``primus-lens import-wandb`` (registered in cli/__init__.py)."""
    try:
        _wandb_proto()
    except MissingWandb as exc:
        print(f"import-wandb reads W&B's run files with wandb itself: pip install wandb ({exc})", file=sys.stderr)
        return 2
    try:
        files = find_run_files(args.path)
    except (OSError, WandbFileError) as exc:
        print(f"import-wandb: {exc}", file=sys.stderr)
        return 1
    from ..core.config import load_config

    config = load_config()
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    sender = None if args.dry_run else Sender(config)
    try:
        return _import_all(args, files, config, sender)
    finally:
        if sender is not None:
            sender.close()


def _import_all(args, files, config, sender) -> int:
    out = sys.stdout
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    uid = args.workload_uid or os.environ.get("WORKLOAD_UID", "").strip() or None
    progress = _progress_factory(sys.stderr)
    results: List[RunResult] = []
    stop = None
    for path in files:
        if stop is not None:
            results.append(RunResult(file=path, error=f"not imported: {stop}"))
            continue
        update, close = progress(_size(path), os.path.basename(path))
        importer = RunImporter(path, sender, uid, args.rank, config.batch_size,
                               pod_name=os.environ.get("POD_NAME", "").strip() or None, progress=update)
        try:
            res = importer.run()
        except Exception as exc:  # a bug of ours: this run is reported, the others still imported
            res = importer.result
            res.error = f"{path}: internal error while importing ({exc!r}); please report it"
        finally:
            close()
        results.append(res)
        if res.error and sender is not None and sender.sink.down:
            stop = "Lens unreachable"
        verb = "would import" if args.dry_run else ("imported" if res.ok else "import incomplete:")
        line = (f"{verb} {res.file}: run {res.run_id or '?'} "
                f"({res.project}/{res.name}) -> workload {res.workload_uid or '?'}: {res.rows} rows, "
                f"{res.points} points" + ("" if args.dry_run else
                                          f", {res.accepted} accepted, {res.rejected} rejected"
                                          + (f", {res.failed} not delivered" if res.failed else ""))
                + (f", {res.filtered} filtered ({_reasons(importer.filtered_reasons)})" if res.filtered else ""))
        if res.error:
            print(f"import-wandb: {res.error}" + "".join(f"; {n}" for n in res.notes), file=sys.stderr)
        else:
            for note in res.notes:
                print(f"import-wandb: {path}: note: {note}", file=sys.stderr)
        if res.run_id or not res.error:
            say(line)
    totals = {k: sum(getattr(r, k) for r in results)
              for k in ("rows", "points", "sent", "accepted", "rejected", "filtered", "failed")}
    failed_runs = sum(1 for r in results if not r.ok)
    say(f"{len(results)} runs ({failed_runs} with problems), {totals['rows']} rows, "
        f"{totals['points']} points" + (" (dry run: nothing sent)" if args.dry_run else
                                        f" sent, {totals['accepted']} accepted, {totals['rejected']} rejected")
        + (f", {totals['filtered']} filtered" if totals["filtered"] else "")
        + (f", {totals['failed']} not delivered" if totals["failed"] else "")
        + ("" if args.dry_run else f" -> {config.api_base_url}"))
    if args.json:
        body = {"runs": [dict(vars(r), ok=r.ok) for r in results], "totals": totals,
                "failed_runs": failed_runs, "dry_run": bool(args.dry_run),
                "api_base_url": None if args.dry_run else config.api_base_url}
        out.write(json.dumps(body, indent=2) + "\n")
    return 1 if failed_runs else 0


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _reasons(reasons: Dict[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])


def _rank(text):
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value <= limits.MAX_RANK:
        raise argparse.ArgumentTypeError(f"must be between 0 and {limits.MAX_RANK}")
    return value


def register(sub):
    """Add ``import-wandb`` to the ``primus-lens`` sub-commands."""
    p = sub.add_parser("import-wandb", help="backfill W&B runs already on disk (offline or online run "
                                            "directories, .wandb files) into Lens (idempotent)")
    p.add_argument("path", help="a wandb/offline-run-*/run-* directory, a run-*.wandb file, "
                                "or a wandb/ directory (every run in it)")
    p.add_argument("--workload-uid", help="workload to import into (default: WORKLOAD_UID, else "
                                          "wandb-<project>-<run id> per run)")
    p.add_argument("--rank", type=_rank, default=0, help="rank the points are stored under (default 0)")
    p.add_argument("--dry-run", action="store_true", help="read and count, send nothing")
    p.add_argument("--json", action="store_true", help="machine-readable summary on stdout")
    p.set_defaults(func=cmd_import_wandb)
