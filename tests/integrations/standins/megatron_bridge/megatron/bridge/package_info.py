"""Stand-in for ``megatron/bridge/package_info.py`` at Megatron-Bridge main 067f987d."""

MAJOR, MINOR, PATCH, PRE_RELEASE = 0, 7, 0, ""
__version__ = f"{MAJOR}.{MINOR}.{PATCH}{PRE_RELEASE}"
