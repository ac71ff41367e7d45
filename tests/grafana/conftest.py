"""The Grafana contract tests run against the same real server process as the UI tests."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ui"))
