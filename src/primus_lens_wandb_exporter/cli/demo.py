"""``primus-lens demo``: start a Lens server, train a tiny model with wandb, show what arrived,
then keep serving until Ctrl-C or SIGTERM (which stop the server it started).

The training program is :mod:`.demo_train` (pure Python, shipped in the package): the demo
runs after ``pip install 'primus-lens-wandb-exporter[server]' wandb``, without a clone or torch.
"""

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional

from .output import console, print_table, table


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
                return sock.getsockname()[1]
            except OSError:
                continue
    raise RuntimeError("no free port")


class _Stop(Exception):
    """SIGTERM / SIGHUP arrived: stop like Ctrl-C does."""


def _raise_stop(signum, _frame):
    raise _Stop(signum)


def _die_with_parent() -> None:
    """In the child, before exec: Linux sends it SIGTERM when the demo dies, even by SIGKILL,
    so no server is left holding the port (elsewhere only the demo's own handlers stop it)."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:
        pass


def _stop_child(proc: Optional[subprocess.Popen], what: str, out) -> None:
    if proc is None or proc.poll() is not None:
        return
    out.print(f"stopping the {what} (pid {proc.pid}) ...")
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cmd_demo(args) -> int:
    # --json: the results document alone on stdout, everything for people on stderr.
    out = console(stderr=args.json)
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        out.print(f"the demo starts a Lens server, which needs {' and '.join(missing)}: "
                  "pip install 'primus-lens-wandb-exporter[server]'", style="red")
        return 2
    if importlib.util.find_spec("wandb") is None and not args.script:
        out.print("the demo's training program logs with wandb, which is not installed: "
                  "pip install wandb", style="red")
        return 2
    # SIGTERM (kill, a container stop) and SIGHUP (terminal closed) stop the demo like Ctrl-C:
    # through the finally below, which stops the server and the training it started.
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    # Ctrl-C even where the shell started us with SIGINT ignored (a background job).
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    children: Dict[str, subprocess.Popen] = {}
    try:
        return _run(args, out, children)
    except (KeyboardInterrupt, _Stop) as exc:
        name = "Ctrl-C" if isinstance(exc, KeyboardInterrupt) else signal.Signals(exc.args[0]).name
        out.print(f"\n{name}: stopping")
        return 0 if isinstance(exc, KeyboardInterrupt) or exc.args[0] == signal.SIGTERM else 128 + exc.args[0]
    finally:
        # Stops whatever still runs, even if a second signal arrives meanwhile.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        train, server = children.get("train"), children.get("server")
        _stop_child(train, "training", out)
        _stop_child(server, "Lens server", out)
        if server is not None:
            out.print("Lens server stopped")
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(args, out, children: Dict) -> int:
    """The demo; each child it starts goes into ``children`` for :func:`cmd_demo` to stop."""
    import requests

    port = _free_port(args.port)
    if port != args.port:
        out.print(f"port {args.port} is in use: using {port}")
    data_dir = args.data_dir or os.path.join(os.path.expanduser("~"), ".cache", "primus-lens", "demo")
    os.makedirs(data_dir, exist_ok=True)
    db = args.db or f"sqlite:///{os.path.join(data_dir, 'lens-demo.db')}"
    base = f"http://127.0.0.1:{port}"
    out.print(f"▶ starting Lens server on {base} (database {db})")
    children["server"] = server = subprocess.Popen(
        [sys.executable, "-m", "primus_lens_wandb_exporter.server", "--port", str(port), "--db", db,
         "--log-level", "warning"], stdout=sys.stderr if args.json else None, preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        # Its own session: Ctrl-C reaches the demo only, which then stops the server (and says so).
        start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(base + "/health", timeout=1).ok:
                break
        except requests.RequestException:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            out.print(f"the Lens server did not start (exit {server.poll()}); its errors are above", style="red")
            return 1
        time.sleep(0.2)
    workload = args.workload or f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    env = dict(os.environ)
    env.update({"WANDB_MODE": env.get("WANDB_MODE", "offline"), "WANDB_SILENT": "true",
                "WANDB_DIR": data_dir, "POD_NAME": f"{workload}-pod-0", "WORKLOAD_UID": workload,
                "PRIMUS_LENS_API_BASE_URL": base + "/api/v1",
                "PRIMUS_LENS_SPOOL_DIR": os.path.join(data_dir, "spool")})
    if args.script:
        command = [sys.executable, args.script, "--steps", str(args.steps)]
        what = f"{args.script} (your script, with --steps {args.steps})"
    else:
        command = [sys.executable, "-m", "primus_lens_wandb_exporter.cli.demo_train", "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size)]
        what = "a tiny pure-Python model (logistic regression, shipped in the package)"
    out.print(f"▶ training {what} with wandb offline, exporter active, no code changes, as workload {workload}")
    started = time.monotonic()
    children["train"] = train = subprocess.Popen(command, env=env, stdout=sys.stderr if args.json else None)
    if train.wait() != 0:
        out.print(f"training failed (exit {train.returncode})", style="red")
        return train.returncode if train.returncode > 0 else 1
    out.print(f"  training finished in {time.monotonic() - started:.1f} s")
    results = _results(base, workload)
    _print_results(out, results)
    if args.json:
        from .output import print_json

        print_json(results)
    if args.exit_after_train:
        return 0
    out.print(f"\nServing on {base} until Ctrl-C (or SIGTERM); that stops the server too.", style="bold")
    sys.stdout.flush()
    sys.stderr.flush()
    code = server.wait()
    out.print(f"the Lens server exited by itself (exit {code})", style="red")
    return 1


def describe_detection(det: Dict) -> str:
    """The detection record in words (``wrapper=None`` means "no wrapper framework")."""
    wrapper, base, method = det.get("wrapper"), det.get("base"), det.get("method")
    if not wrapper and not base:
        return "no training framework detected (a plain Python loop: only wandb)"
    if wrapper and base:
        text = f"{wrapper} on {base}"
    elif base:
        text = f"{base}, no wrapper framework"
    else:
        text = f"{wrapper} (base framework unknown)"
    how = {"exact": "found by import hooks", "heuristic": "guessed from the program"}.get(method, method)
    conf = det.get("confidence")
    return text + (f" ({how}" + (f", confidence {conf:.2f})" if isinstance(conf, (int, float)) else ")")
                   if how else "")


def _results(base: str, workload: str) -> Dict:
    """What Lens stored for the demo's workload, and where to look (``demo --json`` prints it)."""
    import requests

    api = f"{base}/api/v1/workloads/{workload}"
    available = requests.get(f"{api}/metrics/available", params={"data_source": "wandb"}, timeout=10).json()
    names = [m["name"] for m in available.get("metrics", [])]
    data = requests.get(f"{api}/metrics/data", params={"data_source": "wandb", "metrics": ",".join(names)},
                        timeout=30).json()
    series: Dict[str, List] = {}
    for point in data.get("data", []):
        series.setdefault(point["metric_name"], []).append(point)
    metrics = {}
    for name in sorted(series):
        pts = sorted(series[name], key=lambda p: p["iteration"])
        metrics[name] = {"points": len(pts), "first_step": pts[0]["iteration"], "last_step": pts[-1]["iteration"],
                         "last_value": pts[-1]["value"]}
    detection = requests.get(api, timeout=10).json().get("detection") or {}
    return {"workload": workload, "points": data.get("total_count", 0), "metrics": metrics,
            "detection": detection, "framework": describe_detection(detection),
            "urls": {"ui": f"{base}/#/workloads/{workload}/metrics",
                     "metrics_available": f"{api}/metrics/available?data_source=wandb",
                     "metrics_data": f"{api}/metrics/data?data_source=wandb&metrics=loss,accuracy",
                     "api_docs": f"{base}/api/docs"}}


def _print_results(out, results: Dict) -> None:
    out.print(f"\nWorkload {results['workload']}: {results['points']} points stored")
    out.print(f"  framework: {results['framework']}")
    rows = [[name, str(m["points"]), f"{m['first_step']}..{m['last_step']}",
             f"{m['last_value']:.6g}" if isinstance(m["last_value"], (int, float)) else str(m["last_value"])]
            for name, m in results["metrics"].items()]
    print_table(out, table(["metric", "points", "steps", "last value"], rows, right=(1, 2, 3)), indent=2)
    urls = results["urls"]
    out.print()
    out.print(f"Lens UI:   {urls['ui']}")
    out.print(f"API:       {urls['metrics_available']}")
    out.print(f"           {urls['metrics_data']}")
    out.print(f"API docs:  {urls['api_docs']}")


def register(sub) -> None:
    """``primus-lens demo``."""
    demo = sub.add_parser(
        "demo", help="start a Lens server, train a tiny model with wandb, show what arrived, keep serving",
        description="Start a Lens server, train a tiny model that logs with wandb (offline) with the exporter "
                    "active, print what arrived and the UI/API URLs, then keep serving until Ctrl-C or "
                    "SIGTERM, which stop the server too.")
    demo.add_argument("--port", type=int, default=8080,
                      help="port for the Lens server (default 8080; a free one if it is taken)")
    demo.add_argument("--db", help="database URL (default: SQLite lens-demo.db under --data-dir)")
    demo.add_argument("--data-dir", help="where the demo keeps its database, spool and wandb files "
                                         "(default ~/.cache/primus-lens/demo)")
    demo.add_argument("--steps", type=int, default=200, help="training steps, one wandb.log each (default 200)")
    demo.add_argument("--batch-size", type=int, default=64, help="examples per training step (default 64)")
    demo.add_argument("--workload", help="workload uid the run is stored under (default: demo-<date>-<time>)")
    demo.add_argument("--script", metavar="PATH",
                      help="train with this Python script instead of the built-in model (it gets --steps N), "
                           "e.g. examples/train_simple.py from a clone (needs torch)")
    demo.add_argument("--json", action="store_true",
                      help="print the results (points per metric, detection, URLs) as JSON on stdout, "
                           "everything else on stderr")
    demo.add_argument("--exit-after-train", action="store_true",
                      help="stop the server and exit once the results are printed (for scripts and tests); "
                           "by default the demo keeps serving until Ctrl-C or SIGTERM")
    demo.set_defaults(func=cmd_demo)
