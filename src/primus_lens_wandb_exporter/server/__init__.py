"""The Lens telemetry server (``pip install primus-lens-wandb-exporter[server]``).

Receives what exporters send, stores it in SQLite (default) or PostgreSQL and
serves the query API.  Never imported by the exporter's client path.
"""

__all__ = ["create_app", "Settings"]


def __getattr__(name):
    # Lazy: importing the package (e.g. for cli.register) must not pull FastAPI in.
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "Settings":
        from .settings import Settings

        return Settings
    raise AttributeError(name)
