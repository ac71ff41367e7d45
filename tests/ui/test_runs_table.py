"""The runs table (``#/runs``) and the run detail's config tree and summary table, in headless
Chromium, on the real server with a small sweep logged by real ``wandb`` (offline) scripts
activated by the installed exporter (nothing in the script mentions Lens).

Filtering, sorting and grouping happen on the server (``GET /api/v1/runs``); what is checked
here is what the user sees: the rows, the chosen columns, the group headers, the URL.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = [pytest.mark.browser]

PROJECT = "ui-runs-sweep"
#: workload -> (lr, optimizer, tags, best loss)
SWEEP = {
    "ui-runs-adam-1": (0.001, "adam", ["sweep", "baseline"], 0.9),
    "ui-runs-adam-3": (0.003, "adam", ["sweep"], 0.4),
    "ui-runs-sgd-10": (0.01, "sgd", ["sweep"], 0.2),
    "ui-runs-sgd-30": (0.03, "sgd", ["ablation"], 0.7),
}
STEPS = 12

TRAIN = textwrap.dedent(f"""
    import json, sys
    import wandb
    lr, opt, tags, best = float(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
    run = wandb.init(project="{PROJECT}", name=f"{{opt}}-lr{{lr}}", tags=tags,
                     config={{"lr": lr, "optimizer": {{"name": opt, "momentum": 0.9}}, "batch_size": 32}})
    for step in range({STEPS}):
        wandb.log({{"loss": best + 1.0 / (step + 1)}}, step=step)
    run.summary["best_loss"] = best
    wandb.finish()
""")


@pytest.fixture(scope="module")
def sweep(ui_server, tmp_path_factory):
    import json

    from helpers.exporter import exporter_env

    procs = []
    for uid, (lr, opt, tags, best) in SWEEP.items():
        env = exporter_env(ui_server, tmp_path_factory.mktemp(uid), uid, RANK=0, LOCAL_RANK=0, WORLD_SIZE=1)
        procs.append(subprocess.Popen([sys.executable, "-c", TRAIN, str(lr), opt, json.dumps(tags), str(best)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        out = p.communicate(timeout=300)[0]
        assert p.returncode == 0, out[-4000:]
    deadline = time.monotonic() + 60
    while True:  # every run reported with its summary (the exporter flushes at wandb.finish())
        rows = ui_server.get("/runs", q=f"project:{PROJECT} summary.best_loss>0 state:finished")["runs"]
        if len(rows) == len(SWEEP) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sorted(r["workload_uid"] for r in rows) == sorted(SWEEP), rows
    return ui_server


def shown(page):
    """The workload uids of the table's rows, in order (group header rows left out)."""
    return page.eval_on_selector_all("#runs-table tbody tr[data-uid]", "rows => rows.map(r => r.dataset.uid)")


def table_text(page):
    """Every header and cell of the table but the relative "Updated" time (it ticks)."""
    return page.eval_on_selector_all("#runs-table th, #runs-table td:not(.col-updated)", "cs => cs.map(c => c.textContent)")


def set_filter(page, q):
    page.fill("#runs-filter", q)
    page.press("#runs-filter", "Enter")
    page.wait_for_function("(q) => document.querySelector('#runs-body').dataset.q === q", arg=q)


def test_the_filter_syntax_filters_on_the_server_and_names_a_bad_token(ui_page, sweep):
    ui_page.goto(f"{sweep.url}/#/runs")
    set_filter(ui_page, f"project:{PROJECT}")
    assert sorted(shown(ui_page)) == sorted(SWEEP)
    # the run name, tags, state and framework columns come from the W&B run
    row = ui_page.locator('#runs-table tr[data-uid="ui-runs-adam-1"]')
    assert row.locator("td.col-name").inner_text() == "adam-lr0.001"
    assert row.locator("td.col-tags").inner_text().split() == ["sweep", "baseline"]
    assert row.locator("td.col-state").inner_text() == "finished"
    assert row.locator("td.col-step").inner_text() == str(STEPS - 1)
    set_filter(ui_page, f"project:{PROJECT} config.lr>=0.003 tags:sweep")
    assert sorted(shown(ui_page)) == ["ui-runs-adam-3", "ui-runs-sgd-10"]
    set_filter(ui_page, f"project:{PROJECT} summary.best_loss<0.5 config.optimizer.name:sgd")
    assert shown(ui_page) == ["ui-runs-sgd-10"]
    assert "q=" in ui_page.url and "best_loss" in ui_page.url
    # A bad term: the server's message names it; the last good rows stay.
    ui_page.fill("#runs-filter", f"project:{PROJECT} config.lr>=fast")
    ui_page.press("#runs-filter", "Enter")
    err = ui_page.wait_for_selector("#runs-filter-error:not([hidden])")
    assert "'config.lr>=fast'" in err.inner_text() and "not a number" in err.inner_text()
    assert shown(ui_page) == ["ui-runs-sgd-10"]


def test_chosen_config_and_summary_columns_show_their_values_and_sort(ui_page, sweep):
    ui_page.goto(f"{sweep.url}/#/runs?q=project:{PROJECT}")
    ui_page.wait_for_selector("#runs-table")
    ui_page.click("#column-chooser summary")
    ui_page.fill("#column-search", "lr")
    ui_page.check('#column-list input[data-col="config.lr"]')
    ui_page.wait_for_selector('#runs-table th[data-sort="config.lr"]')
    ui_page.fill("#column-search", "best")
    ui_page.check('#column-list input[data-col="summary.best_loss"]')
    ui_page.wait_for_selector('#runs-table th[data-sort="summary.best_loss"]')
    cells = ui_page.eval_on_selector_all(
        "#runs-table tbody tr[data-uid]",
        """rows => rows.map(r => [r.dataset.uid, r.querySelector('td[data-col="config.lr"]').textContent,
                                  r.querySelector('td[data-col="summary.best_loss"]').textContent])""")
    assert {u: (lr, loss) for u, lr, loss in cells} == {
        u: (str(lr), str(best)) for u, (lr, _, _, best) in SWEEP.items()}
    # Sort by a chosen column, in numeric order (0.01 after 0.003), both ways.
    ui_page.click('#runs-table th[data-sort="config.lr"]')
    ui_page.wait_for_function("() => document.querySelector('th[data-sort=\"config.lr\"]').getAttribute('aria-sort') === 'descending'")
    assert shown(ui_page) == ["ui-runs-sgd-30", "ui-runs-sgd-10", "ui-runs-adam-3", "ui-runs-adam-1"]
    ui_page.click('#runs-table th[data-sort="config.lr"]')
    ui_page.wait_for_function("() => document.querySelector('th[data-sort=\"config.lr\"]').getAttribute('aria-sort') === 'ascending'")
    assert shown(ui_page) == ["ui-runs-adam-1", "ui-runs-adam-3", "ui-runs-sgd-10", "ui-runs-sgd-30"]
    assert "cols=config.lr,summary.best_loss" in ui_page.url and "sort=config.lr" in ui_page.url


def test_group_by_a_config_key_shows_groups_with_counts(ui_page, sweep):
    ui_page.goto(f"{sweep.url}/#/runs?q=project:{PROJECT} tags:sweep")
    ui_page.wait_for_selector("#runs-table")
    ui_page.wait_for_selector('#group-by option[value="config.optimizer.name"]', state="attached")
    ui_page.select_option("#group-by", "config.optimizer.name")
    ui_page.wait_for_selector("#runs-table tr.group-row")
    layout = ui_page.eval_on_selector_all(
        "#runs-table tbody tr", "rows => rows.map(r => r.classList.contains('group-row') ? r.textContent.trim() : r.dataset.uid)")
    assert [x.split()[2] if " = " in x else x for x in layout] in (
        ["adam", "ui-runs-adam-1", "ui-runs-adam-3", "sgd", "ui-runs-sgd-10"],
        ["adam", "ui-runs-adam-3", "ui-runs-adam-1", "sgd", "ui-runs-sgd-10"])
    headers = [x for x in layout if " = " in x]
    assert "2 runs" in headers[0] and "1 run" in headers[1]
    assert "group=config.optimizer.name" in ui_page.url


def test_a_copied_runs_url_opens_the_same_table(ui_page, sweep, chromium, screenshot_dir):
    ui_page.goto(f"{sweep.url}/#/runs")
    set_filter(ui_page, f"project:{PROJECT} config.lr<0.03")
    ui_page.click("#column-chooser summary")
    ui_page.check('#column-list input[data-col="config.lr"]')
    ui_page.wait_for_selector('#runs-table th[data-sort="config.lr"]')
    ui_page.check('#column-list input[data-col="summary.best_loss"]')
    ui_page.wait_for_selector('#runs-table th[data-sort="summary.best_loss"]')
    ui_page.click("#column-chooser summary")  # closed again
    ui_page.click('#runs-table th[data-sort="summary.best_loss"]')
    ui_page.wait_for_function("() => document.querySelector('th[data-sort=\"summary.best_loss\"]').getAttribute('aria-sort') === 'descending'")
    ui_page.select_option("#group-by", "config.optimizer.name")
    ui_page.wait_for_selector("#runs-table tr.group-row")
    url = ui_page.url
    before = table_text(ui_page)
    ui_page.screenshot(path=str(screenshot_dir / "runs.png"), full_page=True)
    context = chromium.new_context(viewport={"width": 1280, "height": 860})
    try:
        other = context.new_page()
        other.goto(url)
        other.wait_for_selector("#runs-table tr.group-row")
        assert other.input_value("#runs-filter") == f"project:{PROJECT} config.lr<0.03"
        assert other.input_value("#group-by") == "config.optimizer.name"
        assert other.get_attribute('th[data-sort="summary.best_loss"]', "aria-sort") == "descending"
        assert table_text(other) == before
        assert shown(other) == ["ui-runs-adam-1", "ui-runs-adam-3", "ui-runs-sgd-10"]  # adam 0.9 > 0.4; sgd
    finally:
        context.close()


def test_ticked_runs_open_in_compare(ui_page, sweep):
    ui_page.goto(f"{sweep.url}/#/runs?q=project:{PROJECT}")
    ui_page.check('#runs-table tr[data-uid="ui-runs-adam-1"] input.pick-box')
    ui_page.check('#runs-table tr[data-uid="ui-runs-sgd-30"] input.pick-box')
    assert ui_page.inner_text("#runs-compare") == "Compare 2"
    ui_page.click("#runs-compare")
    ui_page.wait_for_selector('.plot[data-metric="loss"][data-revision]')
    assert "#/compare?w=" in ui_page.url and "ui-runs-adam-1" in ui_page.url and "ui-runs-sgd-30" in ui_page.url


def test_run_detail_shows_the_config_as_a_tree_and_the_summary_as_a_table(ui_page, sweep):
    ui_page.goto(f"{sweep.url}/#/workloads/ui-runs-sgd-10")
    tree = ui_page.wait_for_selector("details.run-config .config-tree")
    node = tree.query_selector('details.tree-node[data-key="optimizer"]')
    assert node is not None and node.get_attribute("open") is not None
    leaves = {li.get_attribute("data-key"): li.inner_text() for li in node.query_selector_all("li.tree-leaf")}
    assert leaves == {"name": "name: sgd", "momentum": "momentum: 0.9"}
    assert tree.query_selector('li.tree-leaf[data-key="lr"]').inner_text() == "lr: 0.01"
    node.query_selector("summary").click()  # collapsible
    assert not node.query_selector('li.tree-leaf[data-key="name"]').is_visible()
    row = ui_page.wait_for_selector('details.run-summary table.summary-table tr[data-key="best_loss"]')
    assert row.inner_text().split() == ["best_loss", "0.2"]
