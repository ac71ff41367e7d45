"""The one helpers package of the test suite (``pythonpath = ["src", "tests"]`` in pyproject).

One module per thing a test drives, each named for it:

- ``exporter``: run a program with the exporter activated (``exporter_env``, ``run_python``,
  ``run_cli``), read W&B's offline records and what a Lens server stored (``get_json``,
  ``metric_points``, ``workload``, ``wait_for``).
- ``server``: a real ``primus-lens serve`` process (``LensServer``) and the pytest fixtures
  over it (``lens_server`` ...; loaded by tests/conftest.py), PostgreSQL scratch databases.
- ``server_data``: ``/wandb/metrics`` bodies and direct SQL reads for the server tests.
- ``wandb_oracle``: W&B's own ``.wandb`` history as the expected points.
- ``scenarios``: programs shared by several test modules.
- ``e2e``: a Lens server per module and the point/detection readers of the integration tests.
- ``standins``: runs a program against the stand-in framework packages (tests/integrations/standins/).
- ``real``: runs a program against a real framework package from PyPI (tests/integrations/real/).
- ``ui``: the server process plus an ingest client for the UI and Grafana tests and the UI benchmark.
"""
