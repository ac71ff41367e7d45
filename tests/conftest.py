"""The Lens server fixtures (``lens_server`` ...) for every test: :mod:`helpers.server`."""

pytest_plugins = ["helpers.server"]
