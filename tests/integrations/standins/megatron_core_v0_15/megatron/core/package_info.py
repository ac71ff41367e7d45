"""Stand-in for ``megatron/core/package_info.py`` at NVIDIA/Megatron-LM tag core_v0.15.0."""

MAJOR, MINOR, PATCH, PRE_RELEASE = 0, 15, 0, ""
__version__ = f"{MAJOR}.{MINOR}.{PATCH}{PRE_RELEASE}"
