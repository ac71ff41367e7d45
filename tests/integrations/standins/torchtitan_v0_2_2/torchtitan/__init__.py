"""Stand-in for ``torchtitan/__init__.py``: the version comes from the distribution's
metadata, else ``"0.0.0+unknown"`` (as upstream; stand-ins have no metadata)."""

from importlib.metadata import version

try:
    __version__ = version("torchtitan")
except Exception:
    __version__ = "0.0.0+unknown"
