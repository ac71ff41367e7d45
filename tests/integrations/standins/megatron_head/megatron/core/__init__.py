"""Stand-in for megatron-core's package root: exposes the version like upstream."""

from .package_info import __version__  # noqa: F401
