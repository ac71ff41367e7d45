"""Browser safety of the real server (issue 11, item 4) and credentials out of stored evidence (item 5).

Every test speaks HTTP to a real ``python -m primus_lens_wandb_exporter.server`` process.
Security does not depend on the database, so these run on SQLite only.
"""

from __future__ import annotations

import json
import socket
import uuid

import pytest
import requests
from helpers.server import LensServer
from helpers.server_data import metrics_body
from helpers.exporter import exporter_env, run_python, wait_for

pytestmark = pytest.mark.parametrize("lens_db_kind", ["sqlite"], indirect=True)

EVIL = "http://evil.example"
SECRET = "hunter2"


def _uid():
    return f"sec-{uuid.uuid4().hex[:10]}"


def _stored(server: LensServer, uid: str) -> bool:
    return requests.get(f"{server.api}/workloads/{uid}", timeout=30).status_code == 200


def _json_error(r, status: int, code: str):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"] == code, r.json()


# -- 1. POSTs must be application/json -------------------------------------------------------------

def test_a_text_plain_cross_site_post_is_not_stored(lens_server):
    uid = _uid()
    # What a page on evil.example can send without a CORS preflight: a "simple" text/plain POST.
    r = requests.post(f"{lens_server.api}/wandb/metrics", data=json.dumps(metrics_body(uid, [("loss", 1, 1.0)])),
                      headers={"Content-Type": "text/plain", "Origin": EVIL}, timeout=30)
    assert r.status_code in (403, 415), r.text
    assert r.json()["error"] in ("cross_origin_refused", "unsupported_media_type")
    assert not _stored(lens_server, uid)


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "application/jsonp"])
def test_ingest_without_a_json_content_type_is_refused_with_415(lens_server, ctype):
    uid = _uid()
    headers = {"Content-Type": ctype} if ctype else {}
    body = json.dumps({"workload_uid": uid, "evidence": {}}).encode()
    s = requests.Session()
    req = requests.Request("POST", f"{lens_server.api}/wandb/detection", data=body, headers=headers).prepare()
    if ctype is None:
        req.headers.pop("Content-Type", None)
    _json_error(s.send(req, timeout=30), 415, "unsupported_media_type")
    assert not _stored(lens_server, uid)


def test_json_with_a_charset_parameter_is_accepted(lens_server):
    uid = _uid()
    r = requests.post(f"{lens_server.api}/wandb/metrics", data=json.dumps(metrics_body(uid, [("loss", 1, 1.0)])),
                      headers={"Content-Type": "Application/JSON; charset=utf-8"}, timeout=30)
    assert r.status_code == 200, r.text
    assert _stored(lens_server, uid)


# -- 3. cross-origin writes ------------------------------------------------------------------------

@pytest.mark.parametrize("origin", [EVIL, "null", "http://127.0.0.1:1", "https://127.0.0.1"])
def test_a_cross_origin_write_is_refused_even_as_json(lens_server, origin):
    uid = _uid()
    r = requests.post(f"{lens_server.api}/wandb/metrics", json=metrics_body(uid, [("loss", 1, 1.0)]),
                      headers={"Origin": origin}, timeout=30)
    _json_error(r, 403, "cross_origin_refused")
    assert not _stored(lens_server, uid)


def test_same_origin_writes_and_cross_origin_reads_are_served(lens_server):
    uid = _uid()
    own = f"http://127.0.0.1:{lens_server.port}"
    r = requests.post(f"{lens_server.api}/wandb/metrics", json=metrics_body(uid, [("loss", 1, 1.0)]),
                      headers={"Origin": own}, timeout=30)
    assert r.status_code == 200, r.text
    # Reads are not refused (the browser keeps another site from reading the answer: no CORS headers).
    r = requests.get(f"{lens_server.api}/workloads/{uid}", headers={"Origin": EVIL}, timeout=30)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


# -- 2. Host names ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/health", "/api/v1/workloads", "/api/docs", "/no/such/page"])
def test_an_unknown_host_name_is_refused_with_400(lens_server, path):
    r = requests.get(lens_server.url + path, headers={"Host": f"evil.example:{lens_server.port}"}, timeout=30)
    _json_error(r, 400, "host_not_allowed")
    assert "--allowed-host" in r.json()["message"]


def test_an_unknown_host_cannot_write(lens_server):
    uid = _uid()
    r = requests.post(f"{lens_server.api}/wandb/metrics", json=metrics_body(uid, [("loss", 1, 1.0)]),
                      headers={"Host": "evil.example"}, timeout=30)
    _json_error(r, 400, "host_not_allowed")
    assert not _stored(lens_server, uid)


@pytest.mark.parametrize("host", ["localhost", "localhost:{port}", "127.0.0.1:{port}", "[::1]:{port}",
                                  "LOCALHOST.", "10.1.2.3:8080", "[fd00::1]"])
def test_loopback_names_and_ip_addresses_are_served_by_default(lens_server, host):
    # IP literals: a DNS-rebinding page always sends a *name*; probes and scrapes use the pod IP.
    r = requests.get(lens_server.url + "/health", headers={"Host": host.format(port=lens_server.port)}, timeout=30)
    assert r.status_code == 200, r.text


def test_allowed_hosts_from_the_option_and_the_environment(lens_server_factory, monkeypatch):
    monkeypatch.setenv("PRIMUS_LENS_ALLOWED_HOSTS", "lens.corp.example, other.example")
    srv = lens_server_factory(extra_args=["--allowed-host", "primus-lens-telemetry-processor",
                                          "--allowed-host", "*.svc.cluster.local"])
    for host in ("primus-lens-telemetry-processor:8080", "lens.corp.example", "other.example",
                 "primus-lens-telemetry-processor.ns.svc.cluster.local:8080"):
        assert requests.get(srv.url + "/health", headers={"Host": host}, timeout=30).status_code == 200, host
    for host in ("evil.example", "primus-lens-telemetry-processor.evil.example", "svc.cluster.local.evil.example"):
        _json_error(requests.get(srv.url + "/health", headers={"Host": host}, timeout=30), 400, "host_not_allowed")
    # A write from a page served under an allowed name is same-origin there.
    uid = _uid()
    r = requests.post(f"{srv.api}/wandb/metrics", json=metrics_body(uid, [("loss", 1, 1.0)]),
                      headers={"Host": "lens.corp.example", "Origin": "https://lens.corp.example"}, timeout=30)
    assert r.status_code == 200, r.text


def test_bound_beyond_loopback_the_machines_own_name_is_served(lens_server_factory):
    # What a client on another machine naturally types (http://<this host>:8080); still not evil.example.
    srv = lens_server_factory(extra_args=["--host", "0.0.0.0", "--allow-insecure-bind"])
    me = socket.gethostname()
    assert requests.get(srv.url + "/health", headers={"Host": f"{me}:{srv.port}"}, timeout=30).status_code == 200
    _json_error(requests.get(srv.url + "/health", headers={"Host": "evil.example"}, timeout=30),
                400, "host_not_allowed")


def test_star_allows_any_host(lens_server_factory):
    srv = lens_server_factory(extra_args=["--allowed-host", "*"])
    assert requests.get(srv.url + "/health", headers={"Host": "evil.example"}, timeout=30).status_code == 200


# -- 4. security headers ---------------------------------------------------------------------------

def _assert_security_headers(r):
    h = r.headers
    assert h.get("x-content-type-options") == "nosniff", (r.url, r.status_code)
    assert h.get("x-frame-options") == "DENY"
    assert h.get("referrer-policy") == "no-referrer"
    csp = h.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert "'unsafe-eval'" not in csp
    return csp


def test_every_answer_has_the_security_headers(lens_server_factory):
    srv = lens_server_factory(token="s3cret-token")
    auth = {"Authorization": "Bearer s3cret-token"}
    answers = [
        requests.get(srv.url + "/", timeout=30),                                     # UI
        requests.get(srv.url + "/static/ui/js/app.js", timeout=30),                  # UI script
        requests.get(srv.url + "/health", timeout=30),
        requests.get(srv.api + "/workloads", headers=auth, timeout=30),              # API
        requests.get(srv.api + "/workloads", timeout=30),                            # 401
        requests.get(srv.api + "/workloads/nope", headers=auth, timeout=30),         # 404
        requests.post(srv.api + "/wandb/metrics", data=b"{", headers={**auth, "Content-Type": "application/json"},
                      timeout=30),                                                   # 400
        requests.get(srv.url + "/health", headers={"Host": "evil.example"}, timeout=30),  # refused Host
        requests.get(srv.url + "/api/openapi.json", timeout=30),
    ]
    assert [r.status_code for r in answers] == [200, 200, 200, 200, 401, 404, 400, 400, 200]
    for r in answers:
        csp = _assert_security_headers(r)
        assert "script-src 'self';" in csp and "'unsafe-inline'" not in csp, r.url
    # The docs page starts Swagger UI with one inline script: allowed by its hash only, there.
    docs = requests.get(srv.url + "/api/docs", timeout=30)
    csp = _assert_security_headers(docs)
    script_src = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
    assert "'sha256-" in script_src and "'unsafe-inline'" not in script_src


# -- 5. credentials out of stored evidence ---------------------------------------------------------

def _evidence_with_secrets():
    return {"environment": {"PRIMUS_LENS_API_BASE_URL": f"http://lens:{SECRET}@lens.example:8080/api/v1",
                            "MY_DB": f"postgresql://app:{SECRET}@db:5432/x?sslmode=require"},
            "notes": [f"pushed to https://user:{SECRET}@git.example/repo.git", {"deep": f"redis://:{SECRET}@r:6379"}]}


@pytest.mark.parametrize("route", ["detection", "batch"])
def test_the_server_redacts_url_credentials_before_storing_evidence(lens_server, route):
    uid = _uid()
    det = {"workload_uid": uid, "evidence": _evidence_with_secrets(),
           "hints": {"primary_indicators": [f"https://u:{SECRET}@hub.example"]}}
    body = det if route == "detection" else {"detection": det}
    r = requests.post(f"{lens_server.api}/wandb/{route}", json=body, timeout=30)
    assert r.status_code == 200, r.text
    for path in (f"/workloads/{uid}", "/workloads"):
        text = requests.get(lens_server.api + path, timeout=30).text
        assert uid in text
        assert SECRET not in text, path
    env = requests.get(f"{lens_server.api}/workloads/{uid}", timeout=30).text
    assert "http://***@lens.example:8080/api/v1" in env and "postgresql://***@db:5432/x" in env


@pytest.mark.parametrize("route", ["run", "batch"])
def test_the_server_redacts_url_credentials_in_run_config_summary_and_tags(lens_server, route):
    """Every reader sees every workload's runs, and ``config=vars(args)`` often holds a
    database URL: its credentials are removed before the run is stored, like evidence's."""
    uid = _uid()
    run = {"workload_uid": uid, "run_id": "r", "event": "started", "tags": [f"s3://k:{SECRET}@b"],
           "config": {"db_url": f"postgresql://app:{SECRET}@db:5432/x", "lr": 0.1, "nested": {"u": [f"https://u:{SECRET}@h"]}},
           "summary": {"artifact": f"s3://AKIA:{SECRET}/x@bucket/key"}}
    r = requests.post(f"{lens_server.api}/wandb/{route}", json=run if route == "run" else {"run": run}, timeout=30)
    assert r.status_code == 200, r.text
    for path in (f"/workloads/{uid}", "/runs", "/runs/keys"):
        assert SECRET not in requests.get(lens_server.api + path, timeout=30).text, path
    (got,) = requests.get(f"{lens_server.api}/workloads/{uid}", timeout=30).json()["runs"]
    assert got["config"] == {"db_url": "postgresql://***@db:5432/x", "lr": 0.1, "nested": {"u": ["https://***@h"]}}
    assert got["summary"] == {"artifact": "s3://***@bucket/key"} and got["tags"] == ["s3://***@b"]


def test_a_real_exporter_sends_no_url_credentials(lens_server, tmp_path):
    uid = _uid()
    # The exporter reports to the server through a URL with credentials in it (the server has no
    # token, so they are ignored), and the environment holds a database URL with a password.
    base = lens_server.api.replace("http://", f"http://lens:{SECRET}@")
    env = exporter_env(lens_server, tmp_path, uid, PRIMUS_LENS_API_BASE_URL=base,
                       PRIMUS_LENS_DB=f"postgresql://lens:{SECRET}@db.example:5432/lens",
                       WANDB_NOTES_URL=f"https://ci:{SECRET}@ci.example/build/1")
    run_python("""
        import wandb
        run = wandb.init(project="sec", name="redaction")
        for step in range(3):
            wandb.log({"loss": 1.0 / (step + 1)}, step=step)
        wandb.finish()
    """, env)
    assert wait_for(lambda: (requests.get(f"{lens_server.api}/workloads/{uid}", timeout=30).json()
                             .get("detection") or {}).get("evidence"), timeout=60)
    text = requests.get(f"{lens_server.api}/workloads/{uid}", timeout=30).text
    assert SECRET not in text
    # The values are there, without their credentials (so the redaction, not a filter, removed them).
    assert "postgresql://***@db.example:5432/lens" in text
    assert SECRET not in requests.get(f"{lens_server.api}/workloads", timeout=30).text
