"""Stand-in for the ``maxtext`` package of AI-Hypercomputer/maxtext main e591f30c (2026-11)."""
