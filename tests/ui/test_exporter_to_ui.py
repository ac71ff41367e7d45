"""End to end: a real wandb training script (offline) -> the exporter -> the real server -> the UI.

The training process is a fresh interpreter where the installed start-up line
activates the exporter, exactly as for users; nothing in the script mentions Lens.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STEPS = 60
TRAIN = textwrap.dedent(f"""
    import time
    import torch
    import wandb

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    run = wandb.init(project="ui-e2e", name="exporter-to-ui", config={{"learning_rate": 0.05, "batch_size": 64}})
    for step in range({STEPS}):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        logged = float("nan") if step == 10 else loss.item()
        wandb.log({{"loss": logged, "accuracy": step / {STEPS}}}, step=step)
        time.sleep(0.12)
    wandb.finish()
""")


def _exporter_missing():
    for module in ("wandb", "torch"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[frameworks]')"
    try:
        if importlib.util.find_spec("primus_lens_wandb_exporter.core.recorder") is None:
            return "primus_lens_wandb_exporter.core.recorder is not there yet (exporter issue)"
    except ImportError as exc:
        return f"the exporter does not import: {exc}"
    return None


def test_a_real_wandb_run_through_the_exporter_is_drawn_live(ui_page, ui_server, tmp_path):
    reason = _exporter_missing()
    if reason:
        pytest.skip(reason)
    from support import exporter_env     # tests/support.py: the environment of a training pod

    workload = "ui-exporter-e2e-0004"
    env = exporter_env(ui_server, tmp_path, workload)
    proc = subprocess.Popen([sys.executable, "-c", TRAIN], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        # The workload appears in the list with the framework the server detected.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            listed = {w["workload_uid"]: w for w in ui_server.get("/workloads")["workloads"]}
            if workload in listed and listed[workload]["points"]:
                break
            time.sleep(0.2)
        ui_page.goto(f"{ui_server.url}/#/workloads/{workload}/metrics")
        ui_page.wait_for_selector('.plot[data-metric="loss"][data-revision]', timeout=60_000)

        seen = []                      # chart sizes observed while training runs
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            n = ui_page.evaluate("""() => { const gd = document.querySelector('.plot[data-metric="loss"]');
                                           const t = gd && gd.data && gd.data.find(t => t.meta.kind === 'raw');
                                           return t ? t.x.length : 0; }""")
            seen.append(n)
            if n == STEPS:
                break
            time.sleep(0.2)
        output = proc.communicate(timeout=120)[0]
        assert proc.returncode == 0, output[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()

    assert seen[-1] == STEPS, (seen, output[-2000:])
    assert len(set(seen)) >= 2, f"the chart never grew while the run was live: {seen}"
    raw = ui_page.evaluate("""() => document.querySelector('.plot[data-metric="loss"]').data
                                 .find(t => t.meta.kind === 'raw').x""")
    assert raw == list(range(STEPS))
    marks = ui_page.evaluate("""() => (document.querySelector('.plot[data-metric="loss"]').data
                                   .find(t => t.meta.kind === 'nonfinite') || {x: []}).x""")
    assert marks == [10]

    detail = ui_server.get(f"/workloads/{workload}")
    ui_page.goto(f"{ui_server.url}/#/")
    row = ui_page.wait_for_selector(f'#workloads-table tr[data-uid="{workload}"]')
    det = detail["detection"] or {}
    expected = " / ".join(x for x in (det.get("wrapper"), det.get("base")) if x) or "—"
    if det.get("wrapper") and det.get("wrapper") == det.get("base"):
        expected = det["wrapper"]
    assert row.query_selector(".framework").inner_text() == expected
