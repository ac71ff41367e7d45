"""``primus-lens demo``: start a Lens server, train a tiny model with wandb, show what arrived."""

import os
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
                return sock.getsockname()[1]
            except OSError:
                continue
    raise RuntimeError("no free port")


def _find_example(name: str) -> Optional[str]:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the package, above cli/
    for root in (os.getcwd(), os.path.dirname(os.path.dirname(here))):
        path = os.path.join(root, "examples", name)
        if os.path.exists(path):
            return path
    return None


def cmd_demo(args) -> int:
    import requests

    example = _find_example(args.example)
    if example is None:
        print(f"examples/{args.example} not found: run the demo from a clone of the repository", file=sys.stderr)
        return 2
    port = _free_port(args.port)
    data_dir = args.data_dir or os.path.join(os.path.expanduser("~"), ".cache", "primus-lens", "demo")
    os.makedirs(data_dir, exist_ok=True)
    db = args.db or f"sqlite:///{os.path.join(data_dir, 'lens-demo.db')}"
    base = f"http://127.0.0.1:{port}"
    print(f"▶ starting Lens server on {base} (database {db})")
    server = subprocess.Popen([sys.executable, "-m", "primus_lens_wandb_exporter.server", "--port", str(port),
                               "--db", db, "--log-level", "warning"])
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(base + "/health", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                print("the Lens server did not start", file=sys.stderr)
                return 1
            time.sleep(0.2)
        workload = args.workload or f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
        env = dict(os.environ)
        env.update({"WANDB_MODE": env.get("WANDB_MODE", "offline"), "WANDB_SILENT": "true",
                    "WANDB_DIR": data_dir, "POD_NAME": f"{workload}-pod-0", "WORKLOAD_UID": workload,
                    "PRIMUS_LENS_API_BASE_URL": base + "/api/v1",
                    "PRIMUS_LENS_SPOOL_DIR": os.path.join(data_dir, "spool")})
        print(f"▶ training {os.path.relpath(example)} (tiny PyTorch model on CPU, wandb offline, "
              f"exporter active, no code changes) as workload {workload}")
        started = time.monotonic()
        train = subprocess.run([sys.executable, example, "--steps", str(args.steps)], env=env)
        if train.returncode != 0:
            print(f"training failed (exit {train.returncode})", file=sys.stderr)
            return train.returncode
        print(f"  training finished in {time.monotonic() - started:.1f} s")
        _print_metrics_table(base, workload)
        print(f"\nLens UI:   {base}/#/workloads/{workload}/metrics")
        print(f"API:       {base}/api/v1/workloads/{workload}/metrics/available?data_source=wandb")
        print(f"           {base}/api/v1/workloads/{workload}/metrics/data?data_source=wandb&metrics=loss,accuracy")
        print(f"API docs:  {base}/api/docs")
        if args.keep_serving if args.keep_serving is not None else sys.stdout.isatty():
            print("\nServing until Ctrl-C ...")
            try:
                server.wait()
            except KeyboardInterrupt:
                pass
        return 0
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()


def _print_metrics_table(base: str, workload: str) -> None:
    import requests

    available = requests.get(f"{base}/api/v1/workloads/{workload}/metrics/available",
                             params={"data_source": "wandb"}, timeout=10).json()
    names = [m["name"] for m in available.get("metrics", [])]
    data = requests.get(f"{base}/api/v1/workloads/{workload}/metrics/data",
                        params={"data_source": "wandb", "metrics": ",".join(names)}, timeout=30).json()
    rows: Dict[str, List] = {}
    for point in data.get("data", []):
        rows.setdefault(point["metric_name"], []).append(point)
    detail = requests.get(f"{base}/api/v1/workloads/{workload}", timeout=10).json()
    det = detail.get("detection") or {}
    print(f"\nWorkload {workload}: framework wrapper={det.get('wrapper')} base={det.get('base')} "
          f"({det.get('method')}), {data.get('total_count', 0)} points stored")
    print(f"  {'metric':<24} {'points':>7} {'steps':>11} {'last value':>14}")
    for name in sorted(rows):
        pts = sorted(rows[name], key=lambda p: p["iteration"])
        steps = f"{pts[0]['iteration']}..{pts[-1]['iteration']}"
        last = pts[-1]["value"]
        last_text = f"{last:.6g}" if isinstance(last, (int, float)) else str(last)
        print(f"  {name:<24} {len(pts):>7} {steps:>11} {last_text:>14}")


def register(sub) -> None:
    """``primus-lens demo``."""
    demo = sub.add_parser("demo", help="start a Lens server, train a tiny model with wandb, show what arrived")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--db", help="database URL (default: SQLite under --data-dir)")
    demo.add_argument("--data-dir", help="where the demo keeps its database and wandb files")
    demo.add_argument("--steps", type=int, default=200)
    demo.add_argument("--workload", help="workload uid (default: demo-<time>)")
    demo.add_argument("--example", default="train_simple.py")
    demo.add_argument("--keep-serving", dest="keep_serving", action="store_true", default=None,
                      help="keep the server up after training (default when run in a terminal)")
    demo.add_argument("--no-keep-serving", dest="keep_serving", action="store_false")
    demo.set_defaults(func=cmd_demo)
