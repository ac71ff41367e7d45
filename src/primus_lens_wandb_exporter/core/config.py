"""Every environment variable the exporter reads, parsed once into a frozen Config.

A malformed value never crashes training: it gets one clear warning and the default.
"""

import os
from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple

DEFAULT_API_BASE_URL = "http://primus-lens-telemetry-processor:8080/api/v1"

_TRUE = ("1", "true", "yes", "on", "enabled")
_FALSE = ("0", "false", "no", "off", "disabled")


@dataclass(frozen=True)
class Config:
    """Exporter settings. Build with :func:`load_config`."""

    hook: bool = True
    api_reporting: bool = True
    api_base_url: str = DEFAULT_API_BASE_URL
    api_token: Optional[str] = None
    save_local: bool = True
    output_path: Optional[str] = None
    enhance_metrics: bool = False
    debug: bool = False
    testing: bool = False
    disabled_integrations: Tuple[str, ...] = ()
    batch_size: int = 20000
    flush_interval: float = 1.0
    queue_size: int = 1_000_000
    http_timeout: float = 5.0
    exit_timeout: float = 5.0
    max_retries: int = 8
    spool_dir: Optional[str] = None
    spool_max_mb: float = 512.0
    sysmetrics_interval: float = 5.0
    warnings: Tuple[str, ...] = field(default=(), compare=False)

    @property
    def local_enabled(self) -> bool:
        """The guide's local JSONL: SAVE_LOCAL true *and* OUTPUT_PATH set."""
        return self.save_local and bool(self.output_path)


ENV_VARS = {
    # name: (field, kind, description) -- the README's configuration table comes from here.
    "PRIMUS_LENS_WANDB_HOOK": ("hook", "bool", "Enable/disable all patching"),
    "PRIMUS_LENS_WANDB_API_REPORTING": ("api_reporting", "bool", "Send to the Lens API"),
    "PRIMUS_LENS_API_BASE_URL": ("api_base_url", "url", "Lens API address"),
    "PRIMUS_LENS_API_TOKEN": ("api_token", "str", "Bearer token for the Lens API"),
    "PRIMUS_LENS_WANDB_SAVE_LOCAL": ("save_local", "bool", "Write local JSONL (needs OUTPUT_PATH)"),
    "PRIMUS_LENS_WANDB_OUTPUT_PATH": ("output_path", "str", "Local JSONL directory"),
    "PRIMUS_LENS_WANDB_ENHANCE_METRICS": ("enhance_metrics", "bool", "Add CPU/memory/GPU metrics"),
    "PRIMUS_LENS_WANDB_DEBUG": ("debug", "bool", "Debug lines on stderr"),
    "PRIMUS_LENS_TESTING": ("testing", "bool", "Our own errors raise (tests only)"),
    "PRIMUS_LENS_DISABLED_INTEGRATIONS": ("disabled_integrations", "list", "Integrations to skip; * = all"),
    "PRIMUS_LENS_BATCH_SIZE": ("batch_size", "int", "Points per request (larger rows are split)"),
    "PRIMUS_LENS_FLUSH_INTERVAL": ("flush_interval", "float", "Seconds between sends"),
    "PRIMUS_LENS_QUEUE_SIZE": ("queue_size", "int", "In-memory log calls before dropping (counted)"),
    "PRIMUS_LENS_HTTP_TIMEOUT": ("http_timeout", "float", "Seconds per HTTP request"),
    "PRIMUS_LENS_EXIT_TIMEOUT": ("exit_timeout", "float", "Max seconds finish + exit (or SIGTERM) wait in total to deliver"),
    "PRIMUS_LENS_MAX_RETRIES": ("max_retries", "int", "HTTP attempts before a batch goes to the spool"),
    "PRIMUS_LENS_SPOOL_DIR": ("spool_dir", "str", "Directory of undelivered batches"),
    "PRIMUS_LENS_SPOOL_MAX_MB": ("spool_max_mb", "float", "Spool size bound; oldest dropped (counted)"),
    "PRIMUS_LENS_SYSMETRICS_INTERVAL": ("sysmetrics_interval", "float", "Seconds between system samples"),
}

_MINIMUMS = {"batch_size": 1, "queue_size": 1, "max_retries": 1, "flush_interval": 0.01,
             "http_timeout": 0.1, "exit_timeout": 0.0, "spool_max_mb": 0.0, "sysmetrics_interval": 0.1}


def parse_value(name, kind, raw, default):
    """``(value, problem)`` of one environment variable's text read as ``kind`` (bool, int,
    float, list, url or text): ``default`` and a one-line message naming the variable when
    the text is not one.  The server's own limit variables are read with it too."""
    text = raw.strip()
    if kind == "bool":
        low = text.lower()
        if low in _TRUE:
            return True, None
        if low in _FALSE:
            return False, None
        return default, f"{name}={raw!r} is not a boolean (use true/false); using {default}"
    if kind in ("int", "float"):
        try:
            value = int(text) if kind == "int" else float(text)
        except ValueError:
            return default, f"{name}={raw!r} is not a number; using {default}"
        if value != value or value in (float("inf"), float("-inf")):
            return default, f"{name}={raw!r} is not a finite number; using {default}"
        return value, None
    if kind == "list":
        return tuple(p.strip().lower() for p in text.split(",") if p.strip()), None
    if kind == "url":
        if not text.startswith(("http://", "https://")):
            return default, f"{name}={raw!r} is not an http(s) URL; using {default}"
        return text.rstrip("/"), None
    return (text or None), None


def load_config(environ: Mapping[str, str] = os.environ) -> Config:
    """Parse the environment; never raises. Problems are in ``config.warnings``."""
    defaults = Config()
    values, warnings = {}, []
    for name, (attr, kind, _) in ENV_VARS.items():
        raw = environ.get(name)
        if raw is None:
            continue
        value, problem = parse_value(name, kind, raw, getattr(defaults, attr))
        minimum = _MINIMUMS.get(attr)
        if problem is None and minimum is not None and value < minimum:
            problem = f"{name}={raw!r} is below the minimum {minimum}; using {getattr(defaults, attr)}"
            value = getattr(defaults, attr)
        if problem:
            warnings.append(problem)
        values[attr] = value
    return Config(warnings=tuple(warnings), **values)
