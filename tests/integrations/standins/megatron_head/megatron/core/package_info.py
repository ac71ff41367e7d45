"""Stand-in for ``megatron/core/package_info.py`` at NVIDIA/Megatron-LM main d98e8a64 (2026-08-22)."""

MAJOR, MINOR, PATCH, PRE_RELEASE = 0, 20, 0, ""
__version__ = f"{MAJOR}.{MINOR}.{PATCH}{PRE_RELEASE}"
