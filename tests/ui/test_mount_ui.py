"""mount_ui on the real app: the UI at /, plotly from the installed package, the API untouched."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lens import ROOT, server_available

fastapi = pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402


@pytest.fixture
def make_client(tmp_path):
    reason = server_available()
    if reason:
        pytest.skip(reason)
    from primus_lens_wandb_exporter.server.app import create_app
    from primus_lens_wandb_exporter.server.settings import Settings

    clients = []

    def make(token=None):
        app = create_app(Settings(db_url=f"sqlite:///{tmp_path}/ui-{len(clients)}.db", token=token))
        client = TestClient(app)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


def test_index_is_served_at_root_and_references_plotly_by_version(make_client):
    client = make_client()
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert re.search(r'src="static/vendor/plotly\.min\.js\?v=[0-9a-f]+"', response.text)
    assert 'src="static/ui/js/app.js' in response.text
    assert "{{" not in response.text


def test_plotly_comes_from_the_installed_package_gzip_or_not(make_client):
    import plotly

    installed = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    client = make_client()
    plain = client.get("/static/vendor/plotly.min.js", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200 and plain.content == installed
    assert "immutable" in plain.headers["cache-control"]
    raw = client.get("/static/vendor/plotly.min.js", headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    assert int(raw.headers["content-length"]) < len(installed) / 2
    assert raw.content == installed          # the client decodes it: same bytes


def test_an_operator_chosen_bundle_replaces_plotlys_own(make_client, tmp_path, monkeypatch):
    # e.g. npm's plotly.js-basic-dist-min in the container image (see deploy/Dockerfile)
    bundle = tmp_path / "plotly-basic.min.js"
    bundle.write_text("/* plotly.js basic bundle stand-in */ window.Plotly = {};\n")
    default_tag = re.search(r"plotly\.min\.js\?v=(\w+)", make_client().get("/").text).group(1)
    monkeypatch.setenv("PRIMUS_LENS_UI_PLOTLY_JS", str(bundle))
    client = make_client()
    assert client.get("/static/vendor/plotly.min.js").content == bundle.read_bytes()
    tag = re.search(r"plotly\.min\.js\?v=(\w+)", client.get("/").text).group(1)
    assert tag != default_tag                   # browsers fetch the new bundle, not a cached one
    monkeypatch.setenv("PRIMUS_LENS_UI_PLOTLY_JS", str(tmp_path / "missing.js"))
    assert len(make_client().get("/static/vendor/plotly.min.js").content) > 1_000_000   # falls back


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
    assert client.get("/static/vendor/plotly.min.js").status_code == 200
    assert client.get("/api/v1/workloads").status_code == 401
    assert client.get("/api/v1/workloads", headers={"Authorization": "Bearer t0ken"}).status_code == 200


def test_no_third_party_chart_code_is_copied_into_the_repository():
    # plotly is served from site-packages; a copy in the tree would go stale unnoticed.
    for path in (ROOT / "src").rglob("*"):
        if path.is_file() and path.suffix in (".js", ".css", ".html"):
            head = path.read_bytes()[:4096]
            assert b"plotly.js v" not in head and b"Copyright 2012-" not in head, path
            assert path.stat().st_size < 200_000, f"{path}: too big for hand-written UI code"
