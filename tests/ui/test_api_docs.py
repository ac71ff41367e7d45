"""/api/docs is self-hosted: Swagger UI from npm (swagger-ui-dist), served like uPlot, no CDN.

Lens runs in clusters without internet, where FastAPI's default page (Swagger UI from
cdn.jsdelivr.net) is blank.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
import types
from urllib.parse import urljoin, urlsplit

import pytest

from helpers.ui import ROOT

pytest.importorskip("fastapi")

SWAGGER = ROOT / "node_modules" / "swagger-ui-dist"
DOCS = "http://localhost/api/docs"  # the test client's base URL (a Host the server answers)


@pytest.fixture(autouse=True)
def _swagger_installed():
    if not (SWAGGER / "swagger-ui-bundle.js").is_file():
        pytest.fail("swagger-ui-dist is not installed: run `npm ci` in the repository root (make install does)")


def page_urls(html):
    """Every URL the docs page loads: stylesheet, favicon, script, and the spec Swagger UI fetches."""
    return {"css": re.search(r'<link type="text/css" rel="stylesheet" href="([^"]+)"', html).group(1),
            "icon": re.search(r'<link rel="shortcut icon" href="([^"]+)"', html).group(1),
            "js": re.search(r'<script src="([^"]+)"', html).group(1),
            "spec": re.search(r"url: '([^']+)'", html).group(1)}


def test_docs_page_references_no_external_host(make_client):
    response = make_client().get("/api/docs")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "SwaggerUIBundle(" in html
    assert not re.search(r"(?i)(https?:)?//[\w.-]", html), re.findall(r"(?i)\S*//\S+", html)
    assert "cdn" not in html.lower() and "jsdelivr" not in html
    assert '"validatorUrl": null' in html          # else Swagger UI asks validator.swagger.io for a badge
    for kind, url in page_urls(html).items():
        # relative to the page, so it also works under a reverse proxy's path prefix
        assert not url.startswith("/") and ":" not in url.split("?")[0], (kind, url)


@pytest.mark.parametrize("kind, source, media", [
    ("js", "swagger-ui-bundle.js", "application/javascript"),
    ("css", "swagger-ui.css", "text/css"),
])
def test_the_page_loads_swagger_ui_from_npm_gzip_or_not(make_client, kind, source, media):
    installed = (SWAGGER / source).read_bytes()
    version = json.loads((SWAGGER / "package.json").read_text())["version"]
    client = make_client()
    url = urljoin(DOCS, page_urls(client.get("/api/docs").text)[kind])
    assert urlsplit(url).path == f"/static/vendor/{source}"
    assert re.fullmatch(rf"v={re.escape(version)}-[0-9a-f]{{12}}", urlsplit(url).query)
    plain = client.get(url, headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200 and plain.content == installed
    assert plain.headers["content-type"].startswith(media) and "content-encoding" not in plain.headers
    assert "immutable" in plain.headers["cache-control"] and "max-age=31536000" in plain.headers["cache-control"]
    packed = client.get(url, headers={"Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip"
    assert int(packed.headers["content-length"]) < len(installed) / 2
    assert packed.content == installed


def test_spec_favicon_and_licences_answer(make_client):
    client = make_client(token="t0ken")             # all of it stays open with a token, as /api/docs did
    urls = page_urls(client.get("/api/docs").text)
    spec = client.get(urljoin(DOCS, urls["spec"]))
    assert spec.status_code == 200 and spec.json()["paths"]["/api/v1/wandb/metrics"]
    assert client.get(urljoin(DOCS, urls["icon"])).headers["content-type"].startswith("image/svg+xml")
    assert client.get("/static/vendor/swagger-ui.LICENSE").text.lstrip().startswith("Apache License")
    assert "SmartBear" in client.get("/static/vendor/swagger-ui.NOTICE").text
    assert "/api/docs" not in spec.json()["paths"]
    assert client.get("/api/v1/workloads").status_code == 401


def test_without_swagger_ui_the_page_says_what_to_run_and_the_spec_still_works(make_client, tmp_path,
                                                                                monkeypatch, caplog, package_logs):
    from primus_lens_wandb_exporter.server.ui import npm

    monkeypatch.setattr(npm, "VENDOR_ROOTS", [tmp_path / "vendor", tmp_path / "node_modules"])
    with caplog.at_level(logging.WARNING, logger="primus_lens_wandb_exporter.server.ui"):
        client = make_client()
    assert "Swagger UI" in caplog.text and "npm ci" in caplog.text
    page = client.get("/api/docs")
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    assert "npm ci" in page.text and 'href="openapi.json"' in page.text
    assert not re.search(r"(?i)(https?:)?//[\w.-]", page.text)
    assert client.get("/api/openapi.json").json()["paths"]
    for name in ("swagger-ui-bundle.js", "swagger-ui.css"):
        response = client.get(f"/static/vendor/{name}")
        assert response.status_code == 404 and "npm ci" in response.text


def _hatch_build(monkeypatch):
    """hatch_build.py imported with a stand-in for hatchling (not installed in test environments)."""
    interface = types.ModuleType("hatchling.builders.hooks.plugin.interface")
    interface.BuildHookInterface = type("BuildHookInterface", (), {})
    for name in ("hatchling", "hatchling.builders", "hatchling.builders.hooks", "hatchling.builders.hooks.plugin"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, interface.__name__, interface)
    import importlib.util

    spec = importlib.util.spec_from_file_location("hatch_build_under_test", ROOT / "hatch_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_wheel_ships_what_the_server_serves(make_client, tmp_path, monkeypatch):
    """hatch_build.py's file list -> a wheel's vendor/ folder -> a server that serves only from it."""
    from primus_lens_wandb_exporter.server.ui import NPM_PACKAGES, npm

    hatch_build = _hatch_build(monkeypatch)
    hook = hatch_build.CustomBuildHook()
    hook.root, hook.target_name = str(ROOT), "wheel"
    build_data = {}
    hook.initialize("standard", build_data)
    shipped = {dst: src for src, dst in build_data["force_include"].items() if "/vendor/" in dst}
    for package in NPM_PACKAGES:
        for path, _ in package.files.values():
            assert f"{hatch_build.VENDOR_TARGET}/{package.name}/{path}" in shipped, (package.name, path)
        assert f"{hatch_build.VENDOR_TARGET}/{package.name}/package.json" in shipped   # for the version tag
    site = tmp_path / "site-packages"
    for dst, src in shipped.items():
        (site / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, site / dst)
    monkeypatch.setattr(npm, "VENDOR_ROOTS", [site / hatch_build.VENDOR_TARGET])    # no node_modules
    client = make_client()
    urls = page_urls(client.get("/api/docs").text)
    assert client.get(urljoin(DOCS, urls["js"])).content == (SWAGGER / "swagger-ui-bundle.js").read_bytes()
    assert client.get("/static/vendor/uPlot.iife.min.js").status_code == 200


def test_swagger_ui_is_pinned_exactly_and_not_copied_into_the_repository():
    lock = json.loads((ROOT / "package-lock.json").read_text())
    pinned = json.loads((ROOT / "package.json").read_text())["dependencies"]["swagger-ui-dist"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned)
    assert lock["packages"]["node_modules/swagger-ui-dist"]["version"] == pinned
    assert json.loads((SWAGGER / "package.json").read_text())["version"] == pinned     # npm ci is current
    for path in (ROOT / "src").rglob("*"):
        if path.is_file() and path.suffix in (".js", ".css") and "vendor" not in path.parts:
            assert b"swagger-ui" not in path.read_bytes()[:4096].lower(), path


@pytest.mark.browser
def test_swagger_ui_renders_the_operations_with_the_internet_blocked(ui_server, ui_page):
    """A real server, headless Chromium, every request to a host other than the server's aborted."""
    host = urlsplit(ui_server.url).hostname
    assert host in ("127.0.0.1", "localhost")
    blocked, served = [], []

    def route(r):
        if urlsplit(r.request.url).hostname in ("127.0.0.1", "localhost"):
            served.append(r.request.url)
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    ui_page.route("**/*", route)
    ui_page.goto(f"{ui_server.url}/api/docs")
    ui_page.wait_for_selector('.opblock .opblock-summary-path[data-path="/api/v1/wandb/metrics"]')
    assert "Primus Lens telemetry API" in ui_page.inner_text(".info .title")
    spec = ui_page.request.get(f"{ui_server.url}/api/openapi.json").json()
    operations = sum(len(methods) for methods in spec["paths"].values())
    assert ui_page.locator(".opblock").count() == operations
    # expanding an operation renders its request body schema (Swagger UI's own JS at work)
    ui_page.click('.opblock-summary-path[data-path="/api/v1/wandb/metrics"]')
    ui_page.wait_for_selector(".opblock.is-open .opblock-body")
    assert blocked == [], blocked
    assert any("/static/vendor/swagger-ui-bundle.js" in u for u in served)
