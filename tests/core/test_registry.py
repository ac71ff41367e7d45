"""The plugin core: built-ins and third parties through one entry-point group."""

import textwrap

from support import exporter_env, run_python

from primus_lens_wandb_exporter.core.registry import create_plugin_manager


def _dist(tmp_path, name, entry_points, modules):
    """A real installed distribution (dist-info on sys.path) declaring primus_lens entry points."""
    site = tmp_path / "site"
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[primus_lens]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
    return str(site)


def test_builtins_are_registered_like_third_party_plugins():
    pm = create_plugin_manager()
    names = {pm.get_name(p) for p in pm.get_plugins()}
    assert {"wandb", "http_sink", "jsonl_sink", "heuristics", "lightning", "transformers", "deepspeed"} <= names


def test_opt_out_star_disables_every_integration_but_keeps_delivery():
    pm = create_plugin_manager(disabled=("*",))
    names = {pm.get_name(p) for p in pm.get_plugins()}
    assert names == {"http_sink", "jsonl_sink", "heuristics"}


def test_a_broken_plugin_is_skipped_with_one_warning_and_a_good_one_still_runs(tmp_path):
    site = _dist(tmp_path, "lens-third-party", {"broken": "lens_broken_plugin", "good": "lens_good_sink"}, {
        "lens_broken_plugin": "raise RuntimeError('this plugin is broken')\n",
        "lens_good_sink": """
            import json, os
            from primus_lens_wandb_exporter.core.hookspecs import hookimpl

            @hookimpl
            def lens_report_metrics(batch):
                with open(os.environ["GOOD_SINK_OUT"], "a") as fh:
                    fh.write(json.dumps(batch.to_payload()) + "\\n")
        """,
    })
    out = tmp_path / "good.jsonl"
    env = exporter_env(None, tmp_path, "plugins", WANDB_MODE="disabled", PRIMUS_LENS_TESTING="0",
                       PRIMUS_LENS_WANDB_API_REPORTING="false", GOOD_SINK_OUT=str(out), PYTHONPATH=site)
    proc = run_python("""
import wandb
wandb.init(project="p")
wandb.log({"loss": 0.5})
wandb.finish()
print("trained")
""", env)
    assert "trained" in proc.stdout
    assert proc.stderr.count("this plugin is broken") == 1 and "'broken'" in proc.stderr
    import json

    (body,) = [json.loads(l) for l in out.read_text().splitlines()]
    assert body["metrics"][0]["name"] == "loss" and body["workload_uid"] == "plugins"
