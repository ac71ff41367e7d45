"""mount_ui on the real app: the UI at /, uPlot from npm (node_modules or a wheel), the API untouched."""

from __future__ import annotations

import json
import logging
import re
import subprocess

import pytest

from helpers.ui import ROOT

pytest.importorskip("fastapi")

UPLOT_DIST = ROOT / "node_modules" / "uplot" / "dist"
SWAGGER_DIST = ROOT / "node_modules" / "swagger-ui-dist"


@pytest.fixture(autouse=True)
def _uplot_installed():
    if not (UPLOT_DIST / "uPlot.iife.min.js").is_file():
        pytest.fail("uPlot is not installed: run `npm ci` in the repository root (make install does)")


def test_index_is_served_at_root_and_references_uplot_by_version(make_client):
    client = make_client()
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    version = json.loads((UPLOT_DIST.parent / "package.json").read_text())["version"]
    assert re.search(rf'src="static/vendor/uPlot\.iife\.min\.js\?v={re.escape(version)}-[0-9a-f]{{12}}"', response.text)
    assert re.search(r'href="static/vendor/uPlot\.min\.css\?v=[\w.-]+"', response.text)
    assert 'src="static/ui/js/app.js' in response.text
    assert "{{" not in response.text


@pytest.mark.parametrize("name, source, media", [
    ("uPlot.iife.min.js", "uPlot.iife.min.js", "application/javascript"),
    ("uPlot.min.css", "uPlot.min.css", "text/css"),
])
def test_uplot_comes_from_npm_gzip_or_not(make_client, name, source, media):
    installed = (UPLOT_DIST / source).read_bytes()
    client = make_client()
    plain = client.get(f"/static/vendor/{name}", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200 and plain.content == installed
    assert plain.headers["content-type"].startswith(media)
    assert "immutable" in plain.headers["cache-control"] and "max-age=31536000" in plain.headers["cache-control"]
    packed = client.get(f"/static/vendor/{name}", headers={"Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip"
    assert int(packed.headers["content-length"]) < len(installed) / 2
    assert packed.content == installed          # the client decodes it: same bytes
    assert client.get("/static/vendor/uPlot.LICENSE").text.startswith("The MIT License")


def test_a_wheel_vendor_folder_comes_first_and_changes_the_version_tag(make_client, tmp_path, monkeypatch):
    from primus_lens_wandb_exporter.server.ui import npm

    default_tag = re.search(r"uPlot\.iife\.min\.js\?v=([\w.-]+)", make_client().get("/").text).group(1)
    wheel = tmp_path / "vendor"                 # what hatch_build.py puts into a wheel
    (wheel / "uplot" / "dist").mkdir(parents=True)
    (wheel / "uplot" / "dist" / "uPlot.iife.min.js").write_text("/* a different build */ var uPlot = function () {};\n")
    (wheel / "uplot" / "dist" / "uPlot.min.css").write_text(".uplot {}\n")
    (wheel / "uplot" / "LICENSE").write_text("The MIT License (MIT)\n")
    (wheel / "uplot" / "package.json").write_text('{"name": "uplot", "version": "9.9.9"}')
    monkeypatch.setattr(npm, "VENDOR_ROOTS", [wheel, ROOT / "node_modules"])
    client = make_client()
    assert client.get("/static/vendor/uPlot.iife.min.js").content == (wheel / "uplot/dist/uPlot.iife.min.js").read_bytes()
    tag = re.search(r"uPlot\.iife\.min\.js\?v=([\w.-]+)", client.get("/").text).group(1)
    assert tag.startswith("9.9.9-") and tag != default_tag   # browsers fetch the new files, not cached ones
    # each package is looked up on its own: Swagger UI, absent from this "wheel", still comes from node_modules
    assert client.get("/static/vendor/swagger-ui.css").content == (SWAGGER_DIST / "swagger-ui.css").read_bytes()


def test_without_uplot_the_vendor_urls_say_what_to_run(make_client, tmp_path, monkeypatch, caplog, package_logs):
    from primus_lens_wandb_exporter.server.ui import npm

    monkeypatch.setattr(npm, "VENDOR_ROOTS", [tmp_path / "vendor", tmp_path / "node_modules"])
    with caplog.at_level(logging.WARNING, logger="primus_lens_wandb_exporter.server.ui"):
        client = make_client()
    assert "npm ci" in caplog.text
    assert client.get("/").status_code == 200                   # the page still loads (and says so)
    for name in ("uPlot.iife.min.js", "uPlot.min.css"):
        response = client.get(f"/static/vendor/{name}")
        assert response.status_code == 404
        assert "npm ci" in response.text and "README" in response.text
    assert client.get("/static/vendor/other.js").status_code == 404


def test_the_old_plotly_variable_is_ignored_with_a_warning(make_client, monkeypatch, caplog, package_logs):
    monkeypatch.setenv("PRIMUS_LENS_UI_PLOTLY_JS", "/opt/primus-lens/plotly-basic.min.js")
    with caplog.at_level(logging.WARNING, logger="primus_lens_wandb_exporter.server.ui"):
        client = make_client()
    assert "PRIMUS_LENS_UI_PLOTLY_JS is no longer used" in caplog.text
    assert client.get("/static/vendor/uPlot.iife.min.js").status_code == 200


def test_every_file_the_page_loads_is_served(make_client):
    client = make_client()
    html = client.get("/").text
    pending = [u.split("?")[0] for u in re.findall(r'(?:src|href)="(static/[^"]+)"', html)]
    seen = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        response = client.get("/" + path)
        assert response.status_code == 200, path
        if path.endswith(".js") and "/vendor/" not in path:
            folder = path.rsplit("/", 1)[0]
            for module in re.findall(r"from '\./([^']+)'", response.text):
                pending.append(f"{folder}/{module}")
    assert {"static/ui/js/metrics.js", "static/ui/js/series.js", "static/ui/style.css"} <= seen
    # Every module is announced with modulepreload, so the browser fetches them all at once.
    modules = {p.name for p in (ROOT / "src/primus_lens_wandb_exporter/server/ui/static/js").glob("*.js")}
    preloaded = {u.split("?")[0].rsplit("/", 1)[1] for u in re.findall(r'rel="modulepreload" href="([^"]+)"', html)}
    assert preloaded == modules
    assert client.get("/favicon.ico").status_code == 200


def test_api_and_health_are_not_shadowed_by_the_ui(make_client):
    client = make_client()
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/api/v1/workloads").json()["workloads"] == []
    missing = client.get("/api/v1/workloads/nope")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/json")
    assert client.get("/api/openapi.json").json()["info"]["title"]
    assert client.get("/static/ui/no-such-file.js").status_code == 404


def test_with_a_token_the_page_loads_and_the_api_asks_for_it(make_client):
    client = make_client(token="t0ken")
    assert client.get("/").status_code == 200
    assert client.get("/static/ui/js/app.js").status_code == 200
    assert client.get("/static/vendor/uPlot.iife.min.js").status_code == 200
    assert client.get("/api/v1/workloads").status_code == 401
    assert client.get("/api/v1/workloads", headers={"Authorization": "Bearer t0ken"}).status_code == 200


def test_no_third_party_chart_code_is_copied_into_the_repository():
    # uPlot comes from npm (node_modules, or a wheel's vendor/ built from it); a copy in the
    # tree would go stale unnoticed.
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    files = [ROOT / p for p in tracked.stdout.splitlines()] if tracked.returncode == 0 else list((ROOT / "src").rglob("*"))
    for path in files:
        if path.is_file() and path.suffix in (".js", ".css", ".html") and "node_modules" not in path.parts:
            head = path.read_bytes()[:4096]
            assert b"plotly.js v" not in head and b"Copyright 2012-" not in head, path
            assert b"github.com/leeoniya/uPlot" not in head and b"Leon Sorokin" not in head, path
            assert path.stat().st_size < 200_000, f"{path}: too big for hand-written UI code"
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/uplot"]["version"] == json.loads(
        (ROOT / "package.json").read_text())["dependencies"]["uplot"]     # pinned exactly
