"""Stand-in for the ``MaxText`` package of AI-Hypercomputer/maxtext at b646a535 (2026-01-23)."""
