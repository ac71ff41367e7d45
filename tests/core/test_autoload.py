"""Zero-code activation: the start-up line shipped in the wheel, and its switches."""

import json
import os
import subprocess
import sys
import zipfile

import pytest

from helpers.exporter import ROOT, exporter_env, run_python

PROBE = """
import sys, json
watch = [type(f).__name__ for f in sys.meta_path if type(f).__name__ == "_Watchdog"]
heavy = sorted(m for m in ("wandb", "requests", "pluggy", "threading", "logging", "torch",
                           "primus_lens_wandb_exporter.core.recorder") if m in sys.modules)
before = "wandb" in sys.modules
import wandb
from wandb.sdk import wandb_run
print(json.dumps({"watcher": bool(watch), "heavy_at_start": heavy, "wandb_before": before,
                  "patched": getattr(wandb, "_primus_lens_patched", False),
                  "run_log_patched": hasattr(wandb_run.Run._log, "_primus_lens_original")}))
"""


def _probe(env):
    return json.loads(run_python(PROBE, env).stdout.strip().splitlines()[-1])


def test_installed_startup_line_watches_imports_and_patches_wandb_on_import(tmp_path):
    result = _probe(exporter_env(None, tmp_path, "act"))
    assert result["watcher"] is True
    assert result["patched"] is True and result["run_log_patched"] is True
    # The start-up line itself imports nothing heavy and patches nothing before wandb is imported.
    assert not result["wandb_before"]
    assert "primus_lens_wandb_exporter.core.recorder" not in result["heavy_at_start"]
    assert "requests" not in result["heavy_at_start"] and "pluggy" not in result["heavy_at_start"]


@pytest.mark.parametrize("value", ["false", "0", "off"])
def test_hook_false_disables_every_patch(tmp_path, value):
    env = exporter_env(None, tmp_path, "act", PRIMUS_LENS_WANDB_HOOK=value)
    result = _probe(env)
    assert result == {**result, "watcher": False, "patched": False, "run_log_patched": False}


def test_disabling_the_wandb_integration_leaves_wandb_untouched(tmp_path):
    env = exporter_env(None, tmp_path, "act", PRIMUS_LENS_DISABLED_INTEGRATIONS="wandb")
    result = _probe(env)
    assert result["watcher"] is True and result["patched"] is False


def test_notebook_install_wandb_hook_patches_an_already_imported_wandb(tmp_path):
    # -S skips site-packages' .pth files: this interpreter has no start-up line, like a
    # notebook kernel started before the package was installed.
    import site

    env = exporter_env(None, tmp_path, "act")
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "src"), *site.getsitepackages()])
    code = """
import sys, json
import wandb
before = getattr(wandb, "_primus_lens_patched", False)
import primus_lens_wandb_exporter.wandb_hook
ok = primus_lens_wandb_exporter.wandb_hook.install_wandb_hook()
print(json.dumps({"before": before, "ok": ok, "after": hasattr(wandb, "_primus_lens_patched")}))
"""
    proc = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"before": False, "ok": True, "after": True}


@pytest.mark.slow
def test_wheel_ships_the_startup_line_and_uninstall_removes_it(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), ROOT],
                   check=True, capture_output=True, timeout=600)
    wheel = next(dist.glob("primus_lens_wandb_exporter-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "primus_lens_wandb_exporter.pth" in names  # at the wheel root -> site-packages
        record = zf.read(next(n for n in names if n.endswith("RECORD"))).decode()
        assert "primus_lens_wandb_exporter.pth," in record  # so pip uninstall removes it
    # Install into a fresh virtual environment (reusing this interpreter's packages).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    site_dir = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    pth = os.path.join(site_dir, "primus_lens_wandb_exporter.pth")
    assert os.path.exists(pth)
    subprocess.run([py, "-m", "pip", "uninstall", "-y", "-q", "primus-lens-wandb-exporter"],
                   check=True, capture_output=True, timeout=300)
    assert not os.path.exists(pth)
