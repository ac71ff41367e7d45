"""metrics/data without max_points streams (constant server memory) and admits at most
MAX_STREAMS such answers at once; one more gets 503 + Retry-After in the JSON error shape.
(Peak RSS is measured by benchmarks/bench_server_memory.py, not asserted here.)"""

from __future__ import annotations

import json
import time

import requests
from helpers.server_data import metrics_body

from primus_lens_wandb_exporter.server.runtime import MAX_STREAMS
from primus_lens_wandb_exporter.server.storage.store import Store

T0 = 1_700_000_000.0


def _post_points(srv, uid, n, rank=0, step=lambda r: r, ts=lambda r: T0 + r, chunk=50_000):
    for lo in range(0, n, chunk):
        body = metrics_body(uid, [], rank=rank)
        body["metrics"] = [{"name": "loss", "row": r, "step": step(r), "value": float(r % 97), "timestamp": ts(r)}
                           for r in range(lo, min(n, lo + chunk))]
        r = srv.post("/wandb/metrics", body)
        assert r.status_code == 200, r.text


def _poll_until_answered(srv, url, after_row, wait=60):
    """The last rows of an unbounded query, asked for until answered 200 (not 503: no slot) or
    ``wait`` seconds passed; the last answer (polled: no speed asserted)."""
    deadline = time.monotonic() + wait
    while True:
        r = requests.get(url, params={"after_row": after_row}, headers=srv.headers(), timeout=60)
        if r.status_code == 200 or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def test_unbounded_answer_is_streamed_in_every_order(srv, uid):
    n = 2 * Store.STREAM_CHUNK + 123  # several chunks per series
    # Steps run backwards and timestamps in a zig-zag, so each order differs from row order.
    _post_points(srv, uid, n, rank=0, step=lambda r: float(n - r), ts=lambda r: T0 + (r % 7) * 1000 + r / 1e4)
    _post_points(srv, uid, 10, rank=1)
    for x, key in [("row", lambda p: p["row"]), ("step", lambda p: (p["iteration"], p["row"])),
                   ("time", lambda p: (p["timestamp"], p["row"]))]:
        r = requests.get(f"{srv.api}/workloads/{uid}/metrics/data", params={"x": x}, headers=srv.headers(), timeout=60)
        assert r.status_code == 200, r.text
        assert "content-length" not in r.headers and r.headers.get("transfer-encoding") == "chunked", r.headers
        body = r.json()
        assert body["workload_uid"] == uid and body["data_source"] == "wandb"
        assert body["total_count"] == len(body["data"]) == n + 10
        rank0 = [p for p in body["data"] if p["rank"] == 0]
        assert [p["rank"] for p in body["data"]] == [0] * n + [1] * 10  # series order kept
        assert rank0 == sorted(rank0, key=key), x
        assert {p["row"] for p in rank0} == set(range(n))


def test_streams_over_the_limit_get_503_with_retry_after(srv, uid):
    # Big enough that an unread answer fills the server's buffer and the sockets, so
    # each open stream keeps its slot until the client goes away.
    _post_points(srv, uid, 200_000)
    url = f"{srv.api}/workloads/{uid}/metrics/data"
    held = []
    try:
        for _ in range(MAX_STREAMS):
            r = requests.get(url, headers=srv.headers(), stream=True, timeout=60)
            assert r.status_code == 200
            held.append(r)
        over = requests.get(url, headers=srv.headers(), timeout=60)
        assert over.status_code == 503, over.status_code
        assert int(over.headers["Retry-After"]) >= 1
        assert set(over.json()) == {"error", "message", "field"} and over.json()["error"] == "busy"
        # A bounded query is not a stream: still answered.
        assert requests.get(url, params={"max_points": 100}, headers=srv.headers(), timeout=60).status_code == 200
    finally:
        for r in held:
            r.close()
    # The slots come back once the clients are gone (polled: no speed asserted).
    r = _poll_until_answered(srv, url, 199_990)
    assert r.status_code == 200 and r.json()["total_count"] == 9


def test_ingest_over_the_inflight_byte_budget_gets_503_then_succeeds(lens_server_factory, monkeypatch):
    """Admission by body bytes: a request that would put more than the budget in flight
    is refused before its body is read; once the first finishes, the retry is stored."""
    import socket

    monkeypatch.setenv("PRIMUS_LENS_INGEST_INFLIGHT_BYTES", str(1 << 20))
    srv = lens_server_factory()
    raw = json.dumps(metrics_body("adm", [("loss", r, 1.0) for r in range(7000)])).encode()
    assert (1 << 19) < len(raw) < (1 << 20), len(raw)
    slow = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
    try:
        # Headers and half the body: admitted, its bytes held while the rest trickles in.
        slow.sendall(f"POST /api/v1/wandb/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(raw)}\r\nConnection: close\r\n\r\n".encode() + raw[:len(raw) // 2])
        time.sleep(2)  # lets the server admit it (ordering only; nothing timed is asserted)
        over = requests.post(srv.api + "/wandb/metrics", data=raw, headers={"Content-Type": "application/json"},
                             timeout=60)
        assert over.status_code == 503, over.text
        assert int(over.headers["Retry-After"]) >= 1 and over.json()["error"] == "busy"
        slow.sendall(raw[len(raw) // 2:])
        answer = b""
        while chunk := slow.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    finally:
        slow.close()
    again = requests.post(srv.api + "/wandb/metrics", data=raw, headers={"Content-Type": "application/json"},
                          timeout=60)
    assert again.status_code == 200 and again.json()["count"] == 7000, again.text


def test_clients_that_stop_reading_give_their_stream_slots_back(lens_server_factory, monkeypatch, uid):
    """Four clients ask for an unbounded answer and never read it, sockets left open.  Each
    stream waits at most PRIMUS_LENS_STREAM_STALL_SECONDS for its client to take a chunk, then
    frees its slot: the next unbounded query is answered while those sockets are still open
    (before, every one answered 503 for as long as they stayed open)."""
    import socket

    # Long enough that the four streams and the fifth request fit before the first gives up.
    monkeypatch.setenv("PRIMUS_LENS_STREAM_STALL_SECONDS", "5")
    srv = lens_server_factory()
    _post_points(srv, uid, 100_000)
    url = f"{srv.api}/workloads/{uid}/metrics/data"
    stalled = []
    try:
        for _ in range(MAX_STREAMS):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the answer cannot fit in flight
            s.connect(("127.0.0.1", srv.port))
            s.sendall(f"GET /api/v1/workloads/{uid}/metrics/data HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            stalled.append(s)
            assert s.recv(12) == b"HTTP/1.1 200"  # its answer has begun: it holds a slot; nothing more is read
        assert requests.get(url, headers=srv.headers(), timeout=60).status_code == 503  # every slot held
        r = _poll_until_answered(srv, url, 99_990)
        assert r.status_code == 200 and r.json()["total_count"] == 9, r.text
        # The first freed slot answers the poll; the other three stall out each on its own clock
        # (they began up to a few hundred ms apart), so the count is polled too.
        deadline = time.monotonic() + 60
        while (stalled_n := srv.get("/health").json()["storage"]["streams_stalled"]) < MAX_STREAMS \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stalled_n == MAX_STREAMS
    finally:
        for s in stalled:
            s.close()


def test_a_malformed_stall_setting_falls_back_to_the_default_with_one_line(lens_server_factory, monkeypatch, uid):
    monkeypatch.setenv("PRIMUS_LENS_STREAM_STALL_SECONDS", "abc")
    monkeypatch.setenv("PRIMUS_LENS_INGEST_INFLIGHT_BYTES", "-5")
    srv = lens_server_factory()  # started: before, "abc" stopped it with a traceback
    _post_points(srv, uid, 10)
    r = requests.get(f"{srv.api}/workloads/{uid}/metrics/data", headers=srv.headers(), timeout=60)
    assert r.status_code == 200 and r.json()["total_count"] == 10  # "0" or "-5" made every stream a 500
    log = srv.log_text()
    assert "PRIMUS_LENS_STREAM_STALL_SECONDS='abc' is not a positive number: using 120.0" in log
    assert "PRIMUS_LENS_INGEST_INFLIGHT_BYTES='-5' is not a positive number" in log
