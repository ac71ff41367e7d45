"""Stand-in for NVIDIA-NeMo/Megatron-Bridge ``megatron.bridge`` (main 067f987d, 2026-08-22; package_info 0.7.0).

``megatron`` itself is a namespace package (no ``__init__``), as upstream.
"""

from .package_info import __version__  # noqa: F401
