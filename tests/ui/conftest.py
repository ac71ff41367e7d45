"""Fixtures for the browser tests: a real Lens server process and headless Chromium."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from helpers.ui import LensServer, server_available

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(config, items):
    reason = None
    if not os.path.exists(CHROMIUM):
        reason = f"Chromium is not at {CHROMIUM} (Debian package `chromium`)"
    for item in items:
        if reason and item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory):
    """The real server (SQLite in a temp dir), shared by the browser tests of a session."""
    reason = server_available()
    if reason:
        pytest.skip(reason)
    server = LensServer.start(tmp_path_factory.mktemp("lens-ui"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def chromium():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Chromium is not at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def ui_page(chromium):
    context = chromium.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    pg = context.new_page()
    errors = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.set_default_timeout(20_000)
    yield pg
    context.close()
    # An uncaught exception in the page is a failure even if the assertions passed.
    assert not errors, f"JavaScript errors in the page: {errors}"


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory):
    """docs/screenshots when PRIMUS_LENS_UPDATE_SCREENSHOTS=1 (to refresh the committed
    images), else a temp folder (artifacts of this run)."""
    if os.environ.get("PRIMUS_LENS_UPDATE_SCREENSHOTS") == "1":
        path = ROOT / "docs" / "screenshots"
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def make_client(tmp_path):
    """``make(token=None)``: a TestClient on the real app over a fresh SQLite file (in-process)."""
    reason = server_available()
    if reason:
        pytest.skip(reason)
    from starlette.testclient import TestClient

    from primus_lens_wandb_exporter.server.app import create_app
    from primus_lens_wandb_exporter.server.settings import Settings

    clients = []

    def make(token=None):
        app = create_app(Settings(db_url=f"sqlite:///{tmp_path}/app-{len(clients)}.db", token=token))
        # localhost: the server answers only Host names it is known by (TestClient's default is "testserver").
        client = TestClient(app, base_url="http://localhost")
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def package_logs(monkeypatch):
    """Let caplog see our loggers: core.log turns propagation off on the package logger
    once any test in this worker process has configured the exporter's logging."""
    monkeypatch.setattr(logging.getLogger("primus_lens_wandb_exporter"), "propagate", True)
