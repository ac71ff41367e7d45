"""Token roles (issue 11, item 6): admin (--token), ingest (--ingest-token), read (--read-token).

Every test speaks HTTP to a real ``python -m primus_lens_wandb_exporter.server`` process.
The check is in front of every route and does not depend on the database: SQLite only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import requests
from helpers.server import SRC, LensServer, free_port
from helpers.server_data import metrics_body

SQLITE_ONLY = pytest.mark.parametrize("lens_db_kind", ["sqlite"], indirect=True)

ADMIN, ADMIN_NEW = "adm-old-7f3e", "adm-new-91c2"
INGEST, INGEST_NEW = "ing-old-5a1b", "ing-new-c4d8"
READ = "rd-only-2e6f"
ROLE_ARGS = ["--token", f"{ADMIN},{ADMIN_NEW}", "--ingest-token", f" {INGEST} , {INGEST_NEW} ",
             "--read-token", READ]


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def _uid():
    return f"roles-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def roles_server(tmp_path_factory):
    """One server with every role, two tokens each for admin and ingest (a rotation)."""
    tmp = tmp_path_factory.mktemp("roles")
    server = LensServer(f"sqlite:///{tmp}/lens.db", tmp / "server.log", extra_args=ROLE_ARGS).start()
    yield server
    server.stop()


def _post(server, path, body, token):
    return requests.post(server.api + path, json=body, headers=bearer(token) if token else {}, timeout=30)


def _get(server, path, token, method="GET", **params):
    return requests.request(method, server.api + path, params=params, headers=bearer(token) if token else {},
                            timeout=30)


def _exists(server, uid) -> bool:
    return _get(server, f"/workloads/{uid}", ADMIN).status_code == 200


def _forbidden(r, needed: str):
    """403 in the documented JSON error shape, naming the role that would be allowed."""
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["error"] == "forbidden" and body["field"] == "Authorization", body
    assert f"needs the {needed} token" in body["message"], body


def _unauthorized(r):
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized" and r.json()["field"] == "Authorization"
    assert r.headers["www-authenticate"].startswith("Bearer")


def _ingest_all(server, uid, token) -> list:
    """Every ingest route once; their status codes."""
    return [_post(server, "/wandb/metrics", metrics_body(uid, [("loss", 1, 1.0)]), token).status_code,
            _post(server, "/wandb/detection", {"workload_uid": uid, "evidence": {}}, token).status_code,
            _post(server, "/wandb/run", {"workload_uid": uid, "run_id": "r1", "event": "started"}, token).status_code,
            _post(server, "/wandb/batch", {"metrics": metrics_body(uid, [("loss", 2, 0.5)])}, token).status_code]


READ_PATHS = ["", "/workloads", "/workloads/{uid}", "/workloads/{uid}/metrics/sources",
              "/workloads/{uid}/metrics/available", "/workloads/{uid}/metrics/data"]


def test_the_ingest_token_writes_but_cannot_list_or_read(roles_server):
    uid = _uid()
    assert _ingest_all(roles_server, uid, INGEST) == [200, 200, 200, 200]
    assert _exists(roles_server, uid)
    for path in READ_PATHS:
        r = _get(roles_server, path.format(uid=uid), INGEST)
        _forbidden(r, "read or admin")
        assert uid not in r.text.replace(f"/{uid}", "")  # nothing of the workload, only its path echoed
        assert "may only POST /api/v1/wandb/*" in r.json()["message"]
    assert _get(roles_server, "/workloads", INGEST, method="HEAD").status_code == 403
    # What `doctor` sends to check a token: {} to /batch is accepted (nothing to store) by an ingest token.
    assert _post(roles_server, "/wandb/batch", {}, INGEST).status_code in (200, 400)


def test_the_read_token_reads_but_cannot_write(roles_server):
    uid = _uid()
    assert _ingest_all(roles_server, uid, ADMIN) == [200, 200, 200, 200]
    for path in READ_PATHS:
        assert _get(roles_server, path.format(uid=uid), READ).status_code == 200, path
    # HEAD passes the role check (FastAPI then answers 405: its GET routes take no HEAD).
    assert _get(roles_server, "/workloads", READ, method="HEAD").status_code not in (401, 403)
    assert uid in _get(roles_server, "/workloads", READ).text
    other = _uid()
    for status in _ingest_all(roles_server, other, READ):
        assert status == 403
    r = _post(roles_server, "/wandb/metrics", metrics_body(other, [("loss", 1, 1.0)]), READ)
    _forbidden(r, "ingest or admin")
    assert "may only GET and HEAD" in r.json()["message"]
    assert not _exists(roles_server, other)
    # doctor's check of a token that cannot ingest: 403, so it says "read-only?".
    assert _post(roles_server, "/wandb/batch", {}, READ).status_code == 403


def test_delete_needs_the_admin_token(roles_server):
    uid = _uid()
    assert _ingest_all(roles_server, uid, INGEST)[0] == 200
    for token in (INGEST, INGEST_NEW, READ):
        r = requests.delete(f"{roles_server.api}/workloads/{uid}", headers=bearer(token), timeout=30)
        _forbidden(r, "admin")
        assert _exists(roles_server, uid)
    r = requests.delete(f"{roles_server.api}/workloads/{uid}", headers=bearer(ADMIN_NEW), timeout=30)
    assert r.status_code == 200, r.text
    assert not _exists(roles_server, uid)


def test_every_token_of_a_rotation_list_is_accepted(roles_server):
    uid = _uid()
    for token in (INGEST, INGEST_NEW, ADMIN, ADMIN_NEW):
        assert _post(roles_server, "/wandb/metrics", metrics_body(uid, [("loss", 1, 1.0)]), token).status_code == 200
    for token in (READ, ADMIN, ADMIN_NEW):
        assert _get(roles_server, f"/workloads/{uid}", token).status_code == 200
    # The list's separators and blanks are not tokens.
    for token in (",", f"{INGEST},{INGEST_NEW}", f"{INGEST} {INGEST_NEW}"):
        _unauthorized(_post(roles_server, "/wandb/metrics", metrics_body(uid, [("loss", 1, 1.0)]), token))


@pytest.mark.parametrize("header", [None, "Bearer nope", f"Bearer {INGEST}x", f"Bearer {INGEST[:-1]}",
                                    f"Basic {ADMIN}", f"{ADMIN}", "Bearer ", f"Bearer {READ.upper()}"])
def test_a_missing_or_unknown_token_is_401_for_every_method(roles_server, header):
    uid = _uid()
    headers = {"Authorization": header} if header is not None else {}
    _unauthorized(requests.post(roles_server.api + "/wandb/metrics", json=metrics_body(uid, [("loss", 1, 1.0)]),
                                headers=headers, timeout=30))
    _unauthorized(requests.get(roles_server.api + "/workloads", headers=headers, timeout=30))
    _unauthorized(requests.delete(f"{roles_server.api}/workloads/{uid}", headers=headers, timeout=30))
    assert not _exists(roles_server, uid)


def test_the_bearer_scheme_is_case_insensitive(roles_server):
    r = requests.get(roles_server.api + "/workloads", headers={"Authorization": f"bearer {READ}"}, timeout=30)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path", ["/health", "/livez", "/readyz", "/metrics", "/api/docs", "/api/openapi.json", "/"])
def test_probes_metrics_docs_and_the_ui_page_stay_open(roles_server, path):
    assert requests.get(roles_server.url + path, timeout=30).status_code == 200


@SQLITE_ONLY
def test_a_single_token_still_does_everything(lens_server_factory):
    srv = lens_server_factory(token="solo-4b7d")
    uid = _uid()
    assert _ingest_all(srv, uid, "solo-4b7d") == [200, 200, 200, 200]
    assert _get(srv, f"/workloads/{uid}/metrics/data", "solo-4b7d").json()["total_count"] == 2
    _unauthorized(_get(srv, "/workloads", None))
    _unauthorized(_post(srv, "/wandb/metrics", metrics_body(uid, [("loss", 3, 1.0)]), "nope"))
    assert requests.delete(f"{srv.api}/workloads/{uid}", headers=bearer("solo-4b7d"), timeout=30).status_code == 200


@SQLITE_ONLY
def test_no_token_leaves_the_api_open(lens_server):
    uid = _uid()
    assert _ingest_all(lens_server, uid, None) == [200, 200, 200, 200]
    assert _get(lens_server, f"/workloads/{uid}", None).status_code == 200


def test_roles_from_the_environment_with_workers_on_a_public_address(tmp_path):
    # The three variables, and --workers N (whose processes get the settings another way):
    # a token of any role counts as "a token" for binding 0.0.0.0.
    env = {"PRIMUS_LENS_API_TOKEN": ADMIN, "PRIMUS_LENS_INGEST_TOKEN": f"{INGEST},{INGEST_NEW}",
           "PRIMUS_LENS_READ_TOKEN": READ}
    srv = LensServer(f"sqlite:///{tmp_path}/lens.db", tmp_path / "server.log", env=env,
                     extra_args=["--host", "0.0.0.0", "--workers", "2"]).start()
    try:
        uid = _uid()
        for _ in range(4):  # more than one connection, so both workers answer some
            assert _post(srv, "/wandb/metrics", metrics_body(uid, [("loss", 1, 1.0)]), INGEST_NEW).status_code == 200
            _forbidden(_get(srv, "/workloads", INGEST), "read or admin")
            _forbidden(_post(srv, "/wandb/metrics", metrics_body(uid, [("loss", 1, 1.0)]), READ), "ingest or admin")
            assert _get(srv, f"/workloads/{uid}", READ).status_code == 200
        assert '"auth tokens per role: admin=1, ingest=2, read=1"' in srv.log_text()
        assert INGEST not in srv.log_text()  # counted, never logged
    finally:
        srv.stop()


def _serve_refused(tmp_path, *args) -> str:
    """Run ``serve`` expecting it to refuse to start (exit 2, nothing created); its stderr."""
    env = dict(os.environ, PYTHONPATH=str(SRC))
    for name in ("PRIMUS_LENS_API_TOKEN", "PRIMUS_LENS_INGEST_TOKEN", "PRIMUS_LENS_READ_TOKEN"):
        env.pop(name, None)
    r = subprocess.run([sys.executable, "-m", "primus_lens_wandb_exporter.server", "--port", str(free_port()),
                        "--db", f"sqlite:///{tmp_path}/x.db", *args], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2, r.stderr
    assert not (tmp_path / "x.db").exists()
    return r.stderr


def test_an_unexpanded_kubernetes_variable_is_refused_as_a_token(tmp_path):
    # deploy/k8s composes each list as "$(LENS_X_TOKEN),$(LENS_X_TOKEN_PREVIOUS)": a variable
    # missing from the pod's env stays literal text, which must not become a valid token.
    err = _serve_refused(tmp_path, "--ingest-token", "real-one,$(LENS_INGEST_TOKEN_PREVIOUS)")
    assert "--ingest-token" in err and "$(VAR)" in err


def test_only_read_or_ingest_tokens_are_enough_to_bind_publicly_but_none_is_not(tmp_path):
    r_stderr = _serve_refused(tmp_path, "--host", "0.0.0.0", "--read-token", " , ")
    assert "--ingest-token" in r_stderr and "--read-token" in r_stderr and "--allow-insecure-bind" in r_stderr
    srv = LensServer(f"sqlite:///{tmp_path}/y.db", tmp_path / "y.log",
                     extra_args=["--host", "0.0.0.0", "--read-token", READ]).start()
    try:
        assert _get(srv, "/workloads", READ).status_code == 200
        # With no admin or ingest token, nobody can write: refused, not silently open.
        _unauthorized(_post(srv, "/wandb/metrics", metrics_body(_uid(), [("loss", 1, 1.0)]), None))
        _forbidden(_post(srv, "/wandb/metrics", metrics_body(_uid(), [("loss", 1, 1.0)]), READ), "ingest or admin")
    finally:
        srv.stop()


def test_an_app_mounted_under_a_root_path_checks_the_same_routes(tmp_path):
    # ASGI servers started with a root path (uvicorn --root-path, an embedding app) put it in
    # front of scope["path"]; the router strips it, so the role check must too.
    from starlette.testclient import TestClient

    from primus_lens_wandb_exporter.server.app import create_app
    from primus_lens_wandb_exporter.server.settings import Settings

    app = create_app(Settings(db_url=f"sqlite:///{tmp_path}/lens.db", token=ADMIN, ingest_token=INGEST,
                              read_token=READ))
    with TestClient(app, base_url="http://localhost", root_path="/lens") as client:
        _unauthorized(client.get("/lens/api/v1/workloads"))
        _forbidden(client.get("/lens/api/v1/workloads", headers=bearer(INGEST)), "read or admin")
        assert client.get("/lens/api/v1/workloads", headers=bearer(READ)).status_code == 200
