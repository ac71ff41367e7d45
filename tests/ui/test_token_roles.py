"""The web UI against a server with token roles (issue 11, item 6), in headless Chromium.

The server runs with an admin, an ingest and a read token (docs/server.md "Access control");
a training pod's ingest token feeds it through the real ingest API.  The page must ask for
a token once, work with the read token, keep it for the tab across a reload, and explain a
token whose role may not read (403) instead of failing silently.
"""

from __future__ import annotations

import time

import pytest

from helpers.ui import LensServer, point, server_available

pytestmark = [pytest.mark.browser]

ADMIN, INGEST, READ = "ui-admin-3c9a", "ui-ingest-71e4", "ui-read-d05b"
WORKLOAD = "ui-roles-workload-0001"

# Counts the token dialog's openings (an init script runs before the page's own, on every load).
COUNT_DIALOGS = """
window.__tokenAsked = 0;
const showModal = HTMLDialogElement.prototype.showModal;
HTMLDialogElement.prototype.showModal = function () { window.__tokenAsked += 1; return showModal.call(this); };
"""


@pytest.fixture(scope="module")
def roles_server(tmp_path_factory):
    reason = server_available()
    if reason:
        pytest.skip(reason)
    server = LensServer.start(tmp_path_factory.mktemp("lens-roles"), token=ADMIN,
                              extra_args=["--ingest-token", INGEST, "--read-token", READ])
    server.token = INGEST  # the helpers now report as a training pod does: with the ingest token only
    server.detection(WORKLOAD, "lightning", "pytorch")
    t0 = time.time() - 10
    server.metrics(WORKLOAD, [point("loss", 1.0 / (s + 1), s, t0 + s) for s in range(10)])
    yield server
    server.stop()


def _api_auth_headers(page) -> list:
    seen = []
    page.on("request", lambda r: seen.append(r.headers.get("authorization")) if "/api/v1/" in r.url else None)
    return seen


def _enter(page, token):
    page.fill("#token-input", token)
    page.click("#token-submit")


def _see_the_workload(page):
    row = page.wait_for_selector(f'tr[data-uid="{WORKLOAD}"]')
    assert "lightning / pytorch" in row.inner_text()


def test_the_read_token_is_asked_once_and_kept_for_the_tab(ui_page, roles_server):
    ui_page.add_init_script(COUNT_DIALOGS)
    ui_page.goto(roles_server.url + "/")
    ui_page.wait_for_selector("#token-dialog[open]")
    assert "read token" in ui_page.inner_text("#token-reason")
    _enter(ui_page, READ)
    _see_the_workload(ui_page)
    ui_page.click(f'tr[data-uid="{WORKLOAD}"] a.uid')
    ui_page.wait_for_function("() => document.querySelector('#workload-framework')?.textContent.includes('lightning')")
    assert ui_page.evaluate("() => window.__tokenAsked") == 1
    assert ui_page.evaluate("() => sessionStorage.getItem('primus-lens-token')") == READ

    sent = _api_auth_headers(ui_page)
    ui_page.reload()
    ui_page.wait_for_function("() => document.querySelector('#workload-framework')?.textContent.includes('lightning')")
    ui_page.goto(roles_server.url + "/#/")
    _see_the_workload(ui_page)
    assert ui_page.evaluate("() => window.__tokenAsked") == 0     # not asked again within the tab
    assert not ui_page.is_visible("#token-dialog")
    assert sent and set(sent) == {f"Bearer {READ}"}


def test_a_token_that_may_not_read_is_explained_and_the_read_token_asked_for(ui_page, roles_server):
    ui_page.add_init_script(COUNT_DIALOGS)
    ui_page.goto(roles_server.url + "/")
    ui_page.wait_for_selector("#token-dialog[open]")
    _enter(ui_page, INGEST)             # the training pods' token: known to the server, but write-only
    ui_page.wait_for_function("() => window.__tokenAsked === 2")
    ui_page.wait_for_selector("#token-dialog[open]")
    reason = ui_page.inner_text("#token-reason")
    assert "may not read" in reason and "needs the read or admin token" in reason and "ingest token" in reason
    assert "PRIMUS_LENS_READ_TOKEN" in reason
    _enter(ui_page, READ)
    _see_the_workload(ui_page)
    assert ui_page.evaluate("() => window.__tokenAsked") == 2


def test_cancelling_on_a_forbidden_token_shows_why_and_stops_asking(ui_page, roles_server):
    ui_page.add_init_script(COUNT_DIALOGS)
    ui_page.goto(roles_server.url + "/")
    ui_page.wait_for_selector("#token-dialog[open]")
    _enter(ui_page, INGEST)
    ui_page.wait_for_function("() => window.__tokenAsked === 2")
    ui_page.click("#token-cancel")
    banner = ui_page.wait_for_selector(".state.error")
    assert "may not read" in banner.inner_text() and "read token" in banner.inner_text()
    ui_page.wait_for_timeout(6000)      # past the list's refresh: it fails again, without a dialog
    assert ui_page.evaluate("() => window.__tokenAsked") == 2
    assert not ui_page.is_visible("#token-dialog")
