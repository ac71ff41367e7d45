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
    import os, sys, time
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
        time.sleep(0.05)
        if step == {STEPS} // 2:
            # Half-way: wait until the test has the page open on the live run.
            deadline = time.monotonic() + 300
            while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
                time.sleep(0.05)
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
    from helpers.exporter import exporter_env     # tests/helpers/exporter.py: the environment of a training pod

    workload = "ui-exporter-e2e-0004"
    env = exporter_env(ui_server, tmp_path, workload)
    go = tmp_path / "go"
    proc = subprocess.Popen([sys.executable, "-c", TRAIN, str(go)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)

    def drawn():
        return ui_page.evaluate("""() => { const el = document.querySelector('.plot[data-metric="loss"]');
                                          const t = el && el.__lens && el.__lens.series.find(t => t.kind === 'raw');
                                          return t ? t.x.length : 0; }""")

    output = ""
    try:
        # The page is open while the run is live: the script waits half-way until we are.
        ui_page.goto(f"{ui_server.url}/#/workloads/{workload}/metrics")
        ui_page.wait_for_selector('.plot[data-metric="loss"][data-revision]', timeout=240_000)
        ui_page.wait_for_function("() => document.querySelector('#live-bar')?.dataset.live === 'on'",
                                  timeout=60_000)
        seen = [drawn()]               # chart sizes observed while the run goes on
        go.touch()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and seen[-1] != STEPS:
            time.sleep(0.2)
            seen.append(drawn())
        output = proc.communicate(timeout=240)[0]
        assert proc.returncode == 0, output[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()

    assert 0 < seen[0] <= STEPS // 2 + 1, seen
    assert seen[-1] == STEPS, (seen, output[-2000:])
    raw = ui_page.evaluate("""() => Array.from(document.querySelector('.plot[data-metric="loss"]').__lens.series
                                 .find(t => t.kind === 'raw').x)""")
    assert raw == list(range(STEPS))
    marks = ui_page.evaluate("""() => Array.from((document.querySelector('.plot[data-metric="loss"]').__lens.series
                                   .find(t => t.kind === 'nonfinite') || {x: []}).x)""")
    assert marks == [10]

    # The list shows the workload with the framework the server has for it.
    detail = ui_server.get(f"/workloads/{workload}")
    ui_page.goto(f"{ui_server.url}/#/")
    row = ui_page.wait_for_selector(f'#workloads-table tr[data-uid="{workload}"]')
    det = detail["detection"] or {}
    parts = [x for x in (det.get("wrapper"), det.get("base")) if x]
    expected = parts[0] if len(set(parts)) == 1 else " / ".join(parts) if parts else "—"
    assert row.query_selector(".framework").inner_text() == expected
