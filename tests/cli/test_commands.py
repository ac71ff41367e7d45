"""``primus-lens demo`` / ``replay`` / help as real processes: signals, no torch, retries, metadata."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import requests
from helpers.exporter import exporter_env, get_json, run_cli, run_python
from helpers.server import LensServer, free_port

CLI = [sys.executable, "-m", "primus_lens_wandb_exporter.cli"]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _read_until(proc, needle: str, timeout: float = 180) -> str:
    """stdout lines of ``proc`` up to the first one holding ``needle``."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return "".join(seen)
    raise AssertionError(f"{needle!r} not printed; output so far:\n{''.join(seen)}")


def test_demo_keeps_serving_when_piped_and_sigterm_stops_its_server(tmp_path):
    # Output to a pipe (as under `make demo | tee`): it used to stop the server before exiting,
    # and SIGTERM used to leave the server running, holding the port.
    port = free_port()
    env = exporter_env(None, tmp_path, "unused")
    demo = subprocess.Popen([*CLI, "demo", "--port", str(port), "--data-dir", str(tmp_path / "demo"),
                             "--steps", "20", "--workload", "sig"], env=env, cwd=str(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = _read_until(demo, "Ctrl-C")
        assert f"http://127.0.0.1:{port}/#/workloads/sig/metrics" in out, out
        assert "framework: no training framework detected" in out and "wrapper=None" not in out, out
        children = psutil.Process(demo.pid).children(recursive=True)
        assert children, "the demo started no server"
        time.sleep(1)  # still serving after the output ended: the printed URLs work
        assert demo.poll() is None, out
        data = requests.get(f"http://127.0.0.1:{port}/api/v1/workloads/sig/metrics/available",
                            params={"data_source": "wandb"}, timeout=10).json()
        assert {m["name"]: m["count"] for m in data["metrics"]}["loss"] == 20
        demo.send_signal(signal.SIGTERM)
        rest, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0, rest
    assert "stopping the Lens server" in rest and "Lens server stopped" in rest, rest
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running: {alive}"
    assert _port_free(port)


BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "numpy"):
            raise ImportError(f"{name} is blocked: this test runs without torch and numpy")
        return None
sys.meta_path.insert(0, _NoTorch())
"""


def test_demo_runs_without_torch_numpy_or_a_clone(tmp_path, lens_db_url_factory):
    # A pip install without torch: the demo's model ships in the package and is pure Python.
    # sitecustomize (imported at start-up from PYTHONPATH) blocks torch and numpy in every
    # process the demo starts; the demo runs outside the repository.
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(BLOCK_TORCH)
    env = exporter_env(None, tmp_path, "unused")
    env["PYTHONPATH"] = os.pathsep.join([str(block), env.get("PYTHONPATH", "")])
    blocked = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert blocked.returncode != 0 and "blocked" in blocked.stderr
    db = lens_db_url_factory()
    proc = subprocess.run([*CLI, "demo", "--exit-after-train", "--json", "--port", str(free_port()), "--db", db, "--data-dir",
                           str(tmp_path / "demo"), "--steps", "30", "--workload", "no-torch"], env=env,
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    results = json.loads(proc.stdout)  # --json: the results alone on stdout
    assert results["points"] == 150 and results["framework"].startswith("no training framework detected")
    assert "framework: no training framework detected" in proc.stderr and "wrapper=None" not in proc.stderr
    srv = LensServer(db, tmp_path / "check.log").start()
    try:
        counts = {m["name"]: m["count"] for m in
                  get_json(srv, "/api/v1/workloads/no-torch/metrics/available", data_source="wandb")["metrics"]}
        detail = get_json(srv, "/api/v1/workloads/no-torch")
    finally:
        srv.stop()
    assert counts == {name: 30 for name in ("loss", "accuracy", "learning_rate", "grad_norm", "epoch")}
    assert json.dumps(detail).count("logistic-regression") >= 1, detail  # the run's config arrived


def test_every_command_in_a_pipe_closed_early_prints_no_traceback(tmp_path):
    # `primus-lens ... | head -1` with the reader gone before the first write.
    env = exporter_env(None, tmp_path, "pipe")
    for args in (["--help"], ["replay", "--help"], ["replay", str(tmp_path / "nothing.jsonl"), "--json"]):
        if args[0] == "replay" and "--json" in args:
            (tmp_path / "nothing.jsonl").write_text("")
        read_fd, write_fd = os.pipe()
        os.close(read_fd)
        try:
            proc = subprocess.run([*CLI, *args], env=env, stdout=write_fd, stderr=subprocess.PIPE, text=True,
                                  timeout=120)
        finally:
            os.close(write_fd)
        assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, (args, proc.stderr)
        # 141: what a shell reports for a process stopped by SIGPIPE (argparse's help ignores the error).
        assert proc.returncode == (0 if "--help" in args else 141), (args, proc.returncode)


def _log_run(tmp_path, workload, steps):
    """A real wandb run with the exporter writing JSONL only (no Lens): the output directory."""
    out = tmp_path / "out"
    env = exporter_env(None, tmp_path, workload, WANDB_MODE="offline", PRIMUS_LENS_WANDB_API_REPORTING="false",
                       PRIMUS_LENS_WANDB_OUTPUT_PATH=str(out))
    run_python(f"""
import wandb
run = wandb.init(project="p", config={{"lr": 0.25, "optimizer": "adamw"}})
for i in range({steps}):
    wandb.log({{"loss": 1.0 / (i + 1)}})
wandb.finish()
""", env)
    return out


def test_replay_of_jsonl_sends_the_runs_config_and_detection(lens_server, tmp_path):
    out = _log_run(tmp_path, "meta", 40)
    records = [json.loads(line) for line in (out / "node_0" / "rank_0" / "wandb_run.jsonl").read_text().splitlines()]
    assert {r["endpoint"] for r in records} == {"/wandb/run", "/wandb/detection"}
    proc = run_cli(["replay", str(out), "--url", lens_server.api, "--json"], exporter_env(lens_server, tmp_path, "meta"))
    summary = json.loads(proc.stdout)
    assert summary["points_sent"] == 40 and summary["run_records"] >= 2 and summary["detection_records"] >= 1
    detail = get_json(lens_server, "/api/v1/workloads/meta")
    (run,) = detail["runs"]
    assert run["config"] == {"lr": 0.25, "optimizer": "adamw"} and run["project"] == "p", run
    assert detail["detection"], detail
    # One rank's points file: its run records next to it go too.
    proc = run_cli(["replay", str(out / "node_0" / "rank_0" / "wandb_metrics.jsonl"), "--url", lens_server.api,
                    "--json"], exporter_env(lens_server, tmp_path, "meta"))
    assert json.loads(proc.stdout)["run_records"] >= 2


def test_replay_retries_until_lens_answers_and_sends_everything_once(tmp_path, lens_db_url_factory):
    # Lens is not up when replay starts (a restart, a rollout): replay retries with backoff
    # instead of failing the batches, and counts the retries.
    out = _log_run(tmp_path, "late", 1200)
    port = free_port()
    srv = LensServer(lens_db_url_factory(), tmp_path / "late.log", port=port)
    replay = subprocess.Popen([*CLI, "replay", str(out), "--url", srv.api, "--batch-size", "500", "--retries", "20",
                               "--retry-wait", "0.2", "--json"], env=exporter_env(None, tmp_path, "late"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = replay.stderr.readline()
        assert "connection refused; retry 1/20" in first, first
        srv.start()
        stdout, stderr = replay.communicate(timeout=120)
        assert replay.returncode == 0, stdout + stderr
        summary = json.loads(stdout)
        assert summary["retries"] >= 1 and summary["requests_failed"] == 0 and summary["points_sent"] == 1200
        data = get_json(srv, "/api/v1/workloads/late/metrics/data", data_source="wandb", metrics="loss")["data"]
        assert sorted(p["iteration"] for p in data) == list(range(1200))
        # Human summary: sent, retried, failed.
        again = run_cli(["replay", str(out), "--url", srv.api], exporter_env(srv, tmp_path, "late")).stdout
        assert "replayed 1200 points" in again and "0 retried, 0 failed" in again, again
    finally:
        if replay.poll() is None:
            replay.kill()
        srv.stop()


def test_replay_retries_503_and_429_and_gives_up_on_400(lens_server, tmp_path):
    # A proxy in front of Lens answers 503, then 429, then lets requests through.
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading

    answers = [503, 429]

    class Proxy(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if answers:
                self.send_response(answers.pop(0))
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            r = requests.post(lens_server.url + self.path, data=body, headers={"Content-Type": "application/json"})
            self.send_response(r.status_code)
            self.send_header("Content-Length", str(len(r.content)))
            self.end_headers()
            self.wfile.write(r.content)

        def log_message(self, *args):
            pass

    out = _log_run(tmp_path, "proxied", 30)
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}/api/v1"
        proc = run_cli(["replay", str(out), "--url", url, "--retry-wait", "0.1", "--json"],
                       exporter_env(None, tmp_path, "proxied"))
        summary = json.loads(proc.stdout)
        assert summary["retries"] == 2 and summary["requests_failed"] == 0, summary
        assert "HTTP 503" in proc.stderr and "HTTP 429" in proc.stderr
        # A 400 does not change on a retry: failed at once, counted, exit 1.
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps({"endpoint": "/wandb/run", "payload": {"run_id": "no-workload"}}) + "\n")
        proc = run_cli(["replay", str(bad), "--url", url, "--json"], exporter_env(None, tmp_path, "x"), check=False)
        summary = json.loads(proc.stdout)
        assert proc.returncode == 1 and summary["retries"] == 0 and summary["requests_failed"] == 1, summary
    finally:
        proxy.shutdown()
    counts = {m["name"]: m["count"] for m in
              get_json(lens_server, "/api/v1/workloads/proxied/metrics/available", data_source="wandb")["metrics"]}
    assert counts == {"loss": 30}


def test_every_option_has_help_and_no_markup():
    from primus_lens_wandb_exporter.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.choices and isinstance(a.choices, dict)]
    assert set(sub.choices) >= {"serve", "demo", "doctor", "replay", "import-wandb"}
    for name, command in sub.choices.items():
        text = command.format_help()
        assert "``" not in text and ":mod:" not in text and ":func:" not in text, (name, text)
        for action in command._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"primus-lens {name} {action.option_strings[0]} has no help"


def test_demo_help_says_it_keeps_serving_and_how_to_stop():
    text = subprocess.run([*CLI, "demo", "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "Ctrl-C" in text and "SIGTERM" in text and "--exit-after-train" in text
    for option in ("--port", "--steps", "--batch-size"):
        assert option in text


def test_doctor_colours_a_terminal_only_and_never_crops_its_table(tmp_path):
    # The same report on a terminal (a pty) has colour; in a pipe it is plain text. On a
    # terminal narrower than the recent-runs table, no cell is cut to "…".
    import pty
    import re

    env = exporter_env(None, tmp_path, "a-rather-long-workload-name", PRIMUS_LENS_TESTING="0",
                       PRIMUS_LENS_EXIT_TIMEOUT="1")
    run_python("import wandb; wandb.init(project='p'); wandb.log({'loss': 1.0}); wandb.finish()", env)
    env.pop("NO_COLOR", None)
    env.update(TERM="xterm-256color", COLUMNS="60")
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([*CLI, "doctor"], env=env, stdout=secondary, stderr=secondary)
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(120)
    os.close(primary)
    on_tty = b"".join(chunks).decode()
    piped = run_cli(["doctor"], env, check=False).stdout
    assert "\x1b[32m✓" in on_tty and "\x1b[1;31m✗" in on_tty and "not reachable" in on_tty, on_tty  # green, red
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", on_tty)
    assert "…" not in plain and "batches refused (auth)" in plain, plain
    assert "a-rather-long-workload-name-pod-0" in plain, plain
    assert "\x1b[" not in piped and "not reachable" in piped, piped


def test_serve_stops_on_ctrl_c_without_a_traceback(tmp_path):
    # uvicorn re-raises SIGINT after its graceful shutdown: `primus-lens serve` then Ctrl-C
    # printed a KeyboardInterrupt traceback (also inside `primus-lens demo`).
    port = free_port()
    env = exporter_env(None, tmp_path, "unused")
    srv = subprocess.Popen([*CLI, "serve", "--port", str(port), "--db", f"sqlite:///{tmp_path}/s.db"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _read_until(srv, "listening on", timeout=60)
        srv.send_signal(signal.SIGINT)
        rest, _ = srv.communicate(timeout=60)
    finally:
        if srv.poll() is None:
            srv.kill()
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest, rest
    assert srv.returncode == 0


def test_doctor_says_why_a_pod_name_gave_no_workload_and_what_to_set(tmp_path):
    # `a` and `e` are never in a Kubernetes random suffix: the name is not parsed (by design,
    # docs/identity.md); the warning says so and names WORKLOAD_UID.
    env = exporter_env(None, tmp_path, "x", pod_name="trial-job-0-abcde")
    env.pop("WORKLOAD_UID")
    report = json.loads(run_cli(["doctor", "--json"], env, check=False).stdout)
    assert report["identity"]["workload_uid"] == "trial-job-0-abcde"
    (line,) = [p for p in report["problems"] if "trial-job-0-abcde" in p]
    assert "'abcde' is not a Kubernetes random suffix" in line and "'a', 'e'" in line, line
    assert "WORKLOAD_UID=trial-job" in line, line
    for name, workload in (("trial-job-0-x7k2q", {}), ("trial-job-0-abcde", {"WORKLOAD_UID": "trial-job"}),
                           ("llama-train", {})):
        env = exporter_env(None, tmp_path, "x", pod_name=name, **workload)
        if not workload:
            env.pop("WORKLOAD_UID")
        report = json.loads(run_cli(["doctor", "--json"], env, check=False).stdout)
        assert not [p for p in report["problems"] if "Kubernetes random suffix" in p], (name, report["problems"])
