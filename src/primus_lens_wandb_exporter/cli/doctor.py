"""``primus-lens doctor``: check that capture works in a fresh interpreter, that Lens answers
and accepts this token, and what the spool and the recent exporter processes hold."""

import glob
import json
import os
import site
import subprocess
import sys
import time
from typing import Dict, List, Optional

from .._version import __version__
from .output import request_error

PTH_NAME = "primus_lens_wandb_exporter.pth"


def _site_dirs() -> List[str]:
    dirs = []
    try:
        dirs.extend(site.getsitepackages())
    except AttributeError:
        pass
    try:
        dirs.append(site.getusersitepackages())
    except AttributeError:
        pass
    dirs.extend(p for p in sys.path if p.endswith("site-packages"))
    return list(dict.fromkeys(dirs))


_PROBE = (
    "import sys, json\n"
    "watch = any(type(f).__name__ == '_Watchdog' for f in sys.meta_path)\n"
    "try:\n"
    "    import wandb\n"
    "    patched = bool(getattr(wandb, '_primus_lens_patched', False)); version = wandb.__version__\n"
    "except ImportError:\n"
    "    patched = None; version = None\n"
    "print(json.dumps({'watcher': watch, 'wandb_patched': patched, 'wandb_version': version}))\n"
)


def doctor_report(environ=os.environ) -> Dict:
    """Everything ``primus-lens doctor`` checks, as a dict."""
    from ..core.config import ENV_VARS, load_config
    from ..core.identity import load_identity, pod_name_problem, resolve_ranks
    from ..sinks.spool import Spool, default_spool_dir

    config = load_config(environ)
    identity = load_identity(environ)
    report: Dict = {"version": __version__, "python": sys.executable, "problems": []}
    pth = [os.path.join(d, PTH_NAME) for d in _site_dirs() if os.path.exists(os.path.join(d, PTH_NAME))]
    report["startup_line"] = pth[0] if pth else None
    if not pth:
        report["problems"].append(f"{PTH_NAME} not found in site-packages: reinstall primus-lens-wandb-exporter")
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60,
                             env=dict(environ))
        probe = json.loads(out.stdout.strip().splitlines()[-1])
    except Exception as exc:
        probe = {"error": repr(exc)}
    report["fresh_interpreter"] = probe
    if not config.hook:
        report["problems"].append("PRIMUS_LENS_WANDB_HOOK is false: capture is off")
    elif probe.get("watcher") is False:
        report["problems"].append("the import watcher is not active in a fresh interpreter")
    elif probe.get("wandb_patched") is False:
        report["problems"].append("wandb imported but not patched (see PRIMUS_LENS_WANDB_DEBUG=true output)")
    report["environment"] = {name: ("<set>" if "TOKEN" in name and environ.get(name) else environ.get(name))
                             for name in ["POD_NAME", "WORKLOAD_UID", "POD_NAMESPACE", *ENV_VARS,
                                          "RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE"]}
    report["config_warnings"] = list(config.warnings)
    report["problems"].extend(config.warnings)
    if not identity.pod_name_from_env:
        report["problems"].append(f"POD_NAME is not set (using host name {identity.pod_name!r})")
    elif pod_name_problem(identity):
        report["problems"].append(pod_name_problem(identity))
    report["identity"] = {"pod_name": identity.pod_name, "workload_uid": identity.workload_uid,
                          "namespace": identity.namespace, "ranks": vars(resolve_ranks(environ))}
    report["api"] = _check_health(config.api_base_url, config.api_token) if config.api_reporting else "disabled"
    if isinstance(report["api"], dict) and not report["api"].get("ok"):
        report["api"]["fix"] = _unreachable_fix(report["api"], config.api_base_url,
                                                "PRIMUS_LENS_API_BASE_URL" in environ)
        report["problems"].append(report["api"]["fix"])
    report["api_auth"] = None
    if isinstance(report["api"], dict) and report["api"].get("ok"):
        # /health is open: only an authenticated route tells whether batches will be accepted.
        report["api_auth"] = auth = _check_auth(config.api_base_url, config.api_token)
        if not auth["ok"]:
            report["problems"].append(auth["fix"])
    spool = Spool(config.spool_dir or default_spool_dir())
    files, points, size = spool.backlog()
    report["spool"] = {"dir": spool.directory, "files": files, "points": points, "bytes": size,
                       "writable": _writable(spool.directory)}
    if files:
        report["problems"].append(f"{points} points wait in the spool ({files} files): they are replayed "
                                  "when Lens is reachable, or run `primus-lens replay {}`".format(spool.directory))
    if not report["spool"]["writable"]:
        report["problems"].append(f"spool directory {spool.directory} is not writable: undeliverable batches "
                                  "would be lost (set PRIMUS_LENS_SPOOL_DIR to a writable volume)")
    report["claims"] = spool.claims()
    for claim in report["claims"]:
        if not claim["alive"]:
            report["problems"].append(f"{claim['points']} points claimed by pid {claim['pid']}, which is gone: "
                                      "the next process (or `primus-lens replay`) sends them")
    rejected = Spool(os.path.join(spool.directory, "rejected"))
    r_files, r_points, _ = rejected.backlog()
    report["rejected"] = {"dir": rejected.directory, "files": r_files, "points": r_points}
    if r_files:
        report["problems"].append(f"{r_points} points in {r_files} batches were rejected by Lens as a whole and kept "
                                  f"in {rejected.directory} (resend with `primus-lens replay --delete {spool.directory}`: "
                                  "--delete removes each file Lens accepts, so this line goes away)")
    recent = _read_stats(spool.directory)
    report["counters"] = recent[:RECENT_RUNS]
    report["counters_older"] = len(recent) - len(report["counters"])
    for stats in report["counters"]:
        http = stats.get("http") or {}
        errors, lost = int(http.get("spool_write_errors") or 0), int(http.get("spool_dropped_points") or 0)
        if errors or lost:
            report["problems"].append(f"pid {stats.get('pid')} (workload {stats.get('workload_uid')}): {errors} spool "
                                      f"write errors, {lost} points lost "
                                      f"({http.get('spool_last_write_error') or 'spool over its size bound'})")
        if http.get("auth_rejected_batches"):
            report["problems"].append(f"pid {stats.get('pid')} (workload {stats.get('workload_uid')}): Lens refused "
                                      f"{http['auth_rejected_batches']} "
                                      "batches (401/403, check PRIMUS_LENS_API_TOKEN); they are kept and replayed")
    return report


def _writable(directory: str) -> bool:
    """Whether a spool file can be created in ``directory`` (tried for real: root ignores modes)."""
    from ..sinks.spool import write_file_atomic

    while not os.path.isdir(directory) and os.path.dirname(directory) != directory:
        directory = os.path.dirname(directory)  # not created yet: the exporter would create it here
    probe = os.path.join(directory, ".primus-lens-doctor-probe-%d" % os.getpid())
    try:
        write_file_atomic(probe, b"ok")
        os.remove(probe)
        return True
    except OSError:
        return False


def _check_health(base_url: str, token: Optional[str]) -> Dict:
    import requests

    root = base_url.split("/api/", 1)[0] if "/api/" in base_url else base_url
    url = root.rstrip("/") + "/health"
    try:
        started = time.monotonic()
        response = requests.get(url, timeout=3, headers={"Authorization": f"Bearer {token}"} if token else {})
        return {"url": url, "ok": response.status_code == 200, "status": response.status_code,
                "ms": round((time.monotonic() - started) * 1000, 1), "error": None if response.ok else response.text[:200]}
    except requests.RequestException as exc:
        return {"url": url, "ok": False, "error": request_error(exc), "detail": repr(exc)}


def _unreachable_fix(api: Dict, base_url: str, url_set: bool) -> str:
    """One line: what failed and what to do."""
    if url_set:
        hint = ("start the Lens server (`primus-lens serve`) or set PRIMUS_LENS_API_BASE_URL to its address "
                f"(now {base_url})")
    else:
        hint = (f"PRIMUS_LENS_API_BASE_URL is not set, so the in-cluster default {base_url} was tried: set it to "
                "your Lens server's API, e.g. PRIMUS_LENS_API_BASE_URL=http://127.0.0.1:8080/api/v1")
    what = api.get("error") if api.get("status") is None else f"answered {api['status']}: {api.get('error')}"
    return f"Lens API not reachable at {api['url']} ({what}): {hint}"


def _check_auth(base_url: str, token: Optional[str]) -> Dict:
    """Whether Lens accepts this token for ingest: an empty batch (stores nothing)
    sent to the route the exporter writes to, with the exporter's header."""
    import requests

    url = base_url.rstrip("/") + "/wandb/batch"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = requests.post(url, json={}, timeout=5, headers=headers)
    except requests.RequestException as exc:
        return {"url": url, "ok": False, "status": None, "error": request_error(exc), "detail": repr(exc),
                "fix": f"Lens answered /health but not {url}: {request_error(exc)}"}
    status = response.status_code
    out = {"url": url, "ok": status == 200, "status": status, "error": None if status == 200 else response.text[:200]}
    if status == 403 and token:
        # The token is known but its role may not write (a read-only token for the UI/Grafana).
        out["fix"] = ("this token cannot ingest (403: read-only?): Lens knows PRIMUS_LENS_API_TOKEN but its role "
                      "may not send data; give training pods an ingest token (the server's --ingest-token / "
                      "PRIMUS_LENS_INGEST_TOKEN) or the admin token")
    elif status in (401, 403):
        out["fix"] = (f"Lens refused the token ({status}): set PRIMUS_LENS_API_TOKEN to the server's ingest token "
                      "(e.g. from the primus-lens-ingest-token Secret)" if token else
                      f"Lens requires a token ({status}) and PRIMUS_LENS_API_TOKEN is not set: set it to the "
                      "server's ingest token (e.g. from the primus-lens-ingest-token Secret)")
    elif status != 200:
        out["fix"] = f"Lens answered {status} to an ingest request at {url}: {response.text[:200]}"
    return out


#: How many exporter processes the "recent runs" table shows (newest first).
RECENT_RUNS = 10


def _read_stats(spool_dir: str) -> List[Dict]:
    """Counters of every exporter process that used ``spool_dir`` (from the spool and its
    fallback), newest first by when the process last wrote them, not by file name."""
    from ..sinks.spool import stats_fallback_dir

    latest: Dict[str, Dict] = {}
    for directory in (os.path.join(spool_dir, "stats"), stats_fallback_dir(spool_dir)):
        if not directory:
            continue
        for path in glob.glob(os.path.join(directory, "*.json")):
            try:
                with open(path, encoding="utf-8") as fh:
                    stats = json.load(fh)
                if not isinstance(stats, dict):
                    continue
                if not isinstance(stats.get("written_at"), (int, float)):
                    stats["written_at"] = os.path.getmtime(path)  # older files: when it was written
            except (OSError, ValueError):
                continue
            name = os.path.basename(path)
            if name not in latest or stats["written_at"] > latest[name]["written_at"]:
                latest[name] = stats
    return sorted(latest.values(), key=lambda s: s["written_at"], reverse=True)


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


#: Points sent / spooled / rejected by Lens, and requests Lens refused for the token (401/403:
#: those are batches, as the exporter stops sending and spools while the token is refused).
RUN_COLUMNS = ("age", "workload", "pod", "pid", "points sent", "spooled", "rejected", "batches refused (auth)")


def _run_row(stats: Dict, now: float) -> List[str]:
    """One recent exporter process: when, which workload, and where its points went."""
    http = stats.get("http") or {}
    n = lambda key: str(int(http.get(key) or 0))  # noqa: E731
    return [_age(now - stats["written_at"]), str(stats.get("workload_uid")), str(stats.get("pod_name")),
            str(stats.get("pid")), n("sent_points"), n("spooled_points"), n("rejected_points"),
            n("auth_rejected_batches")]


def _run_table(runs: List[Dict], now: Optional[float] = None):
    """The recent runs as an aligned table (text left, numbers right)."""
    from .output import table

    now = time.time() if now is None else now
    return table(RUN_COLUMNS, [_run_row(s, now) for s in runs], right=range(3, len(RUN_COLUMNS)))


def cmd_doctor(args) -> int:
    """Exit 0: no problem found; 1: at least one (each printed as one line saying what to do)."""
    report = doctor_report()
    code = 1 if report["problems"] else 0
    try:
        if args.json:
            from .output import print_json

            print_json(report)
        else:
            _print_doctor(report)
        sys.stdout.flush()
    except BrokenPipeError:
        # `doctor --json | head -1`: the reader went away; the exit status still says
        # whether there were problems.
        from .output import quiet_broken_pipe

        quiet_broken_pipe()
    return code


def _print_doctor(report: Dict) -> None:
    from .output import console, print_table

    out = console()
    say = lambda text, style=None: out.print(text, style=style, markup=False)  # noqa: E731

    def check(flag, text):
        from rich.text import Text

        out.print(Text.assemble(("✓", "green") if flag else ("✗", "bold red"), " ", (text, None if flag else "red")))

    shown = set()  # problems a ✗ line already stated in full are not repeated at the end
    probe = report["fresh_interpreter"]
    say(f"primus-lens-wandb-exporter {report['version']} ({report['python']})", "bold")
    check(report["startup_line"], f"start-up line: {report['startup_line'] or 'missing'}")
    check(probe.get("watcher"), "import watcher active in a fresh interpreter")
    if probe.get("wandb_version"):
        check(probe.get("wandb_patched"), f"wandb {probe['wandb_version']} patched on import")
    ident = report["identity"]
    r = ident["ranks"]
    say(f"  workload {ident['workload_uid']}, pod {ident['pod_name']}, rank {r['rank']} of {r['world_size']} "
        f"(local rank {r['local_rank']}, node {r['node_rank']}; from {r['source']})")
    api = report["api"]
    if isinstance(api, dict):
        if api.get("ok"):
            check(True, f"Lens API {api['url']} ({api.get('ms')} ms)")
        else:
            check(False, api["fix"])
            shown.add(api["fix"])
        auth = report.get("api_auth")
        if auth is not None:
            if auth["ok"]:
                check(True, f"Lens accepts this token for ingest ({auth['url']})")
            else:
                check(False, f"Lens ingest {auth['url']}: {auth['fix']}")
                shown.add(auth["fix"])
    else:
        say("- Lens API reporting disabled")
    sp = report["spool"]
    check(not sp["files"] and sp["writable"], f"spool {sp['dir']}: {sp['points']} points in {sp['files']} files"
          + ("" if sp["writable"] else " (NOT WRITABLE)"))
    for claim in report["claims"]:
        state = "running" if claim["alive"] else "gone: will be replayed"
        say(f"  claimed by pid {claim['pid']} (started {claim['start']}, {state}): "
            f"{claim['points']} points {os.path.basename(claim['file'])}")
    rj = report["rejected"]
    if rj["files"]:
        check(False, f"rejected by Lens: {rj['points']} points in {rj['files']} batches ({rj['dir']})")
    runs = report["counters"]
    if runs:
        older = report.get("counters_older") or 0
        say(f"  recent runs (one per exporter process, newest first"
            f"{f'; {older} older not shown' if older else ''}):")
        print_table(out, _run_table(runs), indent=4)
    for stats in runs:
        http = stats.get("http") or {}
        errors, lost = int(http.get("spool_write_errors") or 0), int(http.get("spool_dropped_points") or 0)
        if errors or lost:
            check(False, f"pid {stats.get('pid')}: spool write errors {errors}, points lost {lost}")
    for problem in report["problems"]:
        if problem not in shown:
            say(f"! {problem}", "yellow")


def register(sub) -> None:
    """``primus-lens doctor``."""
    doctor = sub.add_parser(
        "doctor", help="check that capture works and Lens is reachable",
        description="Check that wandb is captured in a fresh interpreter, that Lens answers and accepts this "
                    "token, and what the spool and the recent exporter processes hold. Exit status 0: no "
                    "problem; 1: at least one, each printed as one line that says what to do.")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    doctor.set_defaults(func=cmd_doctor)
