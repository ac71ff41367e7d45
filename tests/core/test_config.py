"""Every env var parsed once; malformed values warn and fall back, never crash."""


import pytest

from primus_lens_wandb_exporter.core.config import DEFAULT_API_BASE_URL, ENV_VARS, load_config
from helpers.exporter import exporter_env, run_python


def test_defaults_follow_the_user_guide():
    cfg = load_config({})
    assert cfg.hook and cfg.api_reporting and cfg.save_local
    assert cfg.output_path is None and not cfg.local_enabled
    assert not cfg.enhance_metrics and not cfg.debug
    assert cfg.api_base_url == DEFAULT_API_BASE_URL == "http://primus-lens-telemetry-processor:8080/api/v1"


@pytest.mark.parametrize("name,raw,attr,expected", [
    ("PRIMUS_LENS_WANDB_API_REPORTING", "ture", "api_reporting", True),
    ("PRIMUS_LENS_BATCH_SIZE", "lots", "batch_size", 20000),
    ("PRIMUS_LENS_BATCH_SIZE", "-3", "batch_size", 20000),
    ("PRIMUS_LENS_FLUSH_INTERVAL", "nan", "flush_interval", 1.0),
    ("PRIMUS_LENS_API_BASE_URL", "lens:8080", "api_base_url", DEFAULT_API_BASE_URL),
])
def test_malformed_value_gets_a_warning_naming_it_and_the_default(name, raw, attr, expected):
    cfg = load_config({name: raw})
    assert getattr(cfg, attr) == expected
    assert len(cfg.warnings) == 1 and name in cfg.warnings[0] and repr(raw) in cfg.warnings[0]


def test_well_formed_values_are_used():
    cfg = load_config({"PRIMUS_LENS_WANDB_SAVE_LOCAL": "true", "PRIMUS_LENS_WANDB_OUTPUT_PATH": "/x",
                       "PRIMUS_LENS_DISABLED_INTEGRATIONS": "Lightning, deepspeed", "PRIMUS_LENS_BATCH_SIZE": "10",
                       "PRIMUS_LENS_API_BASE_URL": "http://lens:1/api/v1/"})
    assert cfg.local_enabled and cfg.batch_size == 10 and not cfg.warnings
    assert cfg.disabled_integrations == ("lightning", "deepspeed")
    assert cfg.api_base_url == "http://lens:1/api/v1"


def test_every_env_var_is_documented_in_the_readme():
    import os

    from helpers.exporter import ROOT

    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    missing = [name for name in ENV_VARS if name not in readme]
    assert not missing


def test_a_malformed_env_var_never_breaks_training(tmp_path):
    env = exporter_env(None, tmp_path, "cfg", PRIMUS_LENS_BATCH_SIZE="many", PRIMUS_LENS_TESTING="0",
                       WANDB_MODE="disabled", PRIMUS_LENS_WANDB_API_REPORTING="false")
    proc = run_python("""
import wandb
wandb.init(project="p")
wandb.log({"loss": 1.0})
wandb.finish()
print("trained")
""", env)
    assert "trained" in proc.stdout
    assert "PRIMUS_LENS_BATCH_SIZE='many' is not a number" in proc.stderr
