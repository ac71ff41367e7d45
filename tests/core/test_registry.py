"""The registry: built-ins and third parties through one entry-point group."""

import os
import textwrap

from helpers.exporter import exporter_env, run_python

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


def _path(site):
    # The stand-in site first, then this checkout's source (the package under test).
    return os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH", "")) if p)


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
                       PRIMUS_LENS_WANDB_API_REPORTING="false", GOOD_SINK_OUT=str(out), PYTHONPATH=_path(site))
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


# --------------------------------------------------------------------------- Integration objects

# A third party's framework adapter: one file declaring INTEGRATIONS + one entry point.
THIRD_PARTY = {
    "lens_thirdparty": """
        from primus_lens_wandb_exporter.core import patching
        from primus_lens_wandb_exporter.core.integration import Integration, NotEnabled, VersionRange, Watch

        MYFW = Integration(name="myfw", module=__name__, watches=(Watch("myfw_lib"),))
        # Tested on 9.x only: the installed 1.0 is refused before setup runs.
        OLDFW = Integration(name="oldfw", module=__name__, watches=(Watch("oldfw_lib", "setup_old"),),
                            versions=VersionRange((9, 0)), version_of=lambda module: module.__version__)
        NOFW = Integration(name="nofw", module=__name__, watches=(Watch("nofw_lib", "setup_no"),))
        INTEGRATIONS = (MYFW, OLDFW, NOFW)

        def _lens(original):
            return lambda: "lens:" + original()

        def setup(module):
            patching.patch(module, "train", _lens)

        def setup_old(module):
            patching.patch(module, "train", _lens)

        def setup_no(module):
            if not hasattr(module, "train_step"):
                raise NotEnabled("nofw_lib has no train_step")
            patching.patch(module, "train", _lens)
    """,
    "myfw_lib": "def train():\n    return 'trained'\n",
    "oldfw_lib": "__version__ = '1.0'\ndef train():\n    return 'trained'\n",
    "nofw_lib": "def train():\n    return 'trained'\n",
}

PRINT_TRAINED = """
from primus_lens_wandb_exporter.core import patching
print("MYFW", myfw_lib.train(), "OLDFW", oldfw_lib.train(), "NOFW", nofw_lib.train())
print("PATCHED", sorted(getattr(owner, "__name__", "?") for owner, *_ in patching._patches
                        if getattr(owner, "__name__", "").endswith("_lib")))
"""


def _third_party_env(tmp_path, **extra):
    site = _dist(tmp_path, "lens-thirdparty", {"myfw": "lens_thirdparty"}, THIRD_PARTY)
    return exporter_env(None, tmp_path, "thirdparty", WANDB_MODE="disabled", PRIMUS_LENS_WANDB_DEBUG="true",
                        PRIMUS_LENS_WANDB_API_REPORTING="false", PYTHONPATH=_path(site), **extra)


def test_a_third_party_integration_gets_its_import_watch_from_the_worker(tmp_path):
    # The worker builds its plugins (entry points) off the training thread and adds the third
    # party's watches; a later import of the watched module is set up like a built-in one.
    proc = run_python("""
import wandb
import primus_lens_wandb_exporter as lens
wandb.init(project="p")
wandb.log({"loss": 0.5})
lens.get_recorder().flush()
import myfw_lib, oldfw_lib, nofw_lib
""" + PRINT_TRAINED, _third_party_env(tmp_path))
    assert "MYFW lens:trained OLDFW trained NOFW trained" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    assert "PATCHED ['myfw_lib']" in proc.stdout


def test_install_sets_up_an_already_imported_third_party_module(tmp_path):
    proc = run_python("""
import myfw_lib, oldfw_lib, nofw_lib
import primus_lens_wandb_exporter as lens
assert lens.install() and lens.install()
""" + PRINT_TRAINED, _third_party_env(tmp_path))
    assert "MYFW lens:trained OLDFW trained NOFW trained" in proc.stdout, proc.stdout + proc.stderr[-3000:]


def test_not_enabled_is_one_line_and_patches_nothing(tmp_path):
    # A release outside the checked range is one warning (the user can act on it); a
    # framework without the hooked API is one debug line.
    proc = run_python("""
import myfw_lib, oldfw_lib, nofw_lib
import primus_lens_wandb_exporter as lens
lens.install()
lens.install()
""" + PRINT_TRAINED, _third_party_env(tmp_path))
    assert "PATCHED ['myfw_lib']" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if "did not enable" in line]
    assert lines == [
        "[Primus Lens] WARNING integration oldfw did not enable: oldfw 1.0 is outside the tested range [9.0, ...); "
        "its adapter stays off (releases checked: docs/frameworks/verified.md)",
        "[Primus Lens] DEBUG integration nofw did not enable: nofw_lib has no train_step",
    ], proc.stderr[-3000:]
    assert proc.stderr.count("WARNING") == 1 and "error in" not in proc.stderr


def test_a_disabled_third_party_integration_is_not_set_up(tmp_path):
    proc = run_python("""
import myfw_lib, oldfw_lib, nofw_lib
import primus_lens_wandb_exporter as lens
lens.install()
""" + PRINT_TRAINED, _third_party_env(tmp_path, PRIMUS_LENS_DISABLED_INTEGRATIONS="myfw"))
    assert "MYFW trained" in proc.stdout and "PATCHED []" in proc.stdout, proc.stdout + proc.stderr[-3000:]


def test_the_start_up_index_is_the_declarations():
    # core/index.py is what the .pth line reads (importlib.metadata is too slow for start-up).
    from primus_lens_wandb_exporter.core import index, registry

    with open(index.__file__, encoding="utf-8") as fh:
        assert fh.read() == registry.render_index(), \
            "core/index.py drifted: python -m primus_lens_wandb_exporter.core.registry --write-index"
    declared = {(w.module, i.name) for i in registry.integrations() for w in i.watches}
    assert {(module, name) for module, entries in index.WATCHED.items() for name, _f, _m in entries} == declared
    assert index.NAMES == {i.name for i in registry.integrations()}


def test_every_builtin_framework_fact_lives_in_its_integration():
    # Distributions, hints and exports come from the declarations: the heuristics and the
    # package's lazy names read them; nothing else lists a framework.
    import primus_lens_wandb_exporter as package
    from primus_lens_wandb_exporter.core.detection.heuristics import frameworks

    names = set(frameworks())
    assert {"primus", "lightning", "hf_trainer", "keras", "megatron", "megatron_bridge", "deepspeed", "torchtitan",
            "maxtext", "jax", "transformers", "tensorflow", "pytorch"} == names
    assert package.LensTrainerCallback.__name__ == "LensTrainerCallback"
