"""``GET /api/v1/runs``: the runs table's filter syntax, sort, group_by and columns, in SQL on
SQLite and PostgreSQL (``srv`` runs each test on both), through the real ingest API.

Every workload of a test carries the test's own project, so ``project:<p>`` keeps the
tests of the shared module server apart.
"""

from __future__ import annotations

import time
import uuid

import pytest
from helpers.server_data import metrics_body, sql_scalar

T0 = 1_700_000_000.0

#: (suffix, lr, optimizer, tags, wrapper, loss, steps, finished)
SWEEP = [
    ("a", 0.001, "adam", ["sweep", "baseline"], "lightning", 0.9, 10, True),
    ("b", 0.003, "adam", ["sweep"], "lightning", 0.4, 25, False),
    ("c", 0.01, "sgd", ["sweep"], None, 0.2, 40, False),
    ("d", 0.03, "sgd", ["ablation"], "transformers", 0.7, 5, True),
]


def _seed(srv, project):
    """Four workloads (one W&B run each; ``a`` has a second rank) with config, summary, tags,
    detection and points; returns ``{suffix: workload uid}``."""
    uids = {}
    for sfx, lr, opt, tags, wrapper, loss, steps, finished in SWEEP:
        uid = f"{project}-{sfx}"
        uids[sfx] = uid
        for rank in ((0, 1) if sfx == "a" else (0,)):
            run = {"source": "wandb", "workload_uid": uid, "pod_name": f"{uid}-{rank}", "pod_uid": "",
                   "run_id": f"{uid}-r{rank}", "rank": rank, "event": "started", "project": project,
                   "name": f"lr-{lr}", "tags": tags, "timestamp": time.time(),
                   "config": {"lr": lr, "optimizer": {"name": opt, "betas": [0.9, 0.99]}, "seed": 42,
                              "fp16": sfx in ("a", "c"), "note": "it's 50% \"quoted\""},
                   "summary": {"loss": loss + 0.01 * rank, "train/acc": 1 - loss}}
            r = srv.post("/wandb/run", run)
            assert r.status_code == 200, r.text
            r = srv.post("/wandb/metrics", metrics_body(uid, [("loss", s, loss, T0 + s) for s in range(steps)],
                                                        rank=rank, run_id=f"{uid}-r{rank}"))
            assert r.status_code == 200, r.text
            if finished:
                r = srv.post("/wandb/run", {"source": "wandb", "workload_uid": uid, "run_id": f"{uid}-r{rank}",
                                            "rank": rank, "event": "finished", "status": "finished"})
                assert r.status_code == 200, r.text
        if wrapper:
            det = {"source": "wandb", "type": "framework_detection_raw", "version": "1.0", "workload_uid": uid,
                   "detection": {"wrapper": wrapper, "base": "pytorch", "method": "exact", "confidence": 1.0}}
            assert srv.post("/wandb/detection", det).status_code == 200
    return uids


@pytest.fixture(scope="module")
def sweep(srv):
    project = f"runs-{uuid.uuid4().hex[:8]}"
    return project, _seed(srv, project)


def runs(srv, project, q="", **params):
    r = srv.get("/runs", q=f"project:{project} {q}", limit=1000, **params)
    assert r.status_code == 200, r.text
    return r.json()


def names(answer, uids):
    by_uid = {v: k for k, v in uids.items()}
    return sorted(by_uid[row["workload_uid"]] for row in answer["runs"])


@pytest.mark.parametrize("q,expected", [
    ("config.lr>=0.003", "bcd"),
    ("config.lr>0.003", "cd"),
    ("config.lr<=0.003 tags:sweep", "ab"),
    ("config.lr=0.01", "c"),
    ("config.lr!=0.01", "abd"),
    ("config.lr>=1e-2", "cd"),                     # numbers compared as numbers, not as text
    ("summary.loss<0.5", "bc"),
    ("summary.train/acc>0.5", "bc"),               # W&B's slash-named keys
    ("config.optimizer.name:sgd", "cd"),           # nested config
    ("config.optimizer.name:SGD", "cd"),           # text is case-insensitive
    ("config.optimizer.name:~ad", "ab"),
    ("config.fp16:true", "ac"),
    ("config.fp16=false", "bd"),
    ("config.seed:42", "abcd"),
    ('config.seed:"42"', ""),                      # quoted: the text "42", and seed is a number
    ("config.missing!=1", "abcd"),                 # no key: it does not equal 1
    ("config.missing>0", ""),
    ("tags:sweep", "abc"),
    ("tags:SWEEP", "abc"),
    ("tags!=sweep", "d"),
    ("tags:~base", "a"),
    ("framework:lightning", "ab"),
    ("framework:pytorch", "abd"),                  # wrapper or base
    ("framework:~trans", "d"),
    ("framework!=lightning", "cd"),
    ("state:running", "bc"),
    ("state:finished", "ad"),
    ("state!=finished", "bc"),
    ("name:~0.00", "ab"),
    ("lr-0.03", "d"),                              # a plain word: substring of the name, uid or project
    ("step>=24", "bc"),                            # the last W&B history row (_step)
    ("step<9", "d"),
    ("config.lr>=0.003 tags:sweep framework:lightning", "b"),
    ("", "abcd"),
])
def test_filter_syntax_selects_the_right_runs(srv, sweep, q, expected):
    project, uids = sweep
    got = runs(srv, project, q)
    assert names(got, uids) == list(expected), q
    assert got["total_count"] == len(expected)


def test_row_fields_are_those_of_the_rank0_run_with_the_workload_counts(srv, sweep):
    project, uids = sweep
    row = [r for r in runs(srv, project, "")["runs"] if r["workload_uid"] == uids["a"]][0]
    assert row["run_id"] == f"{uids['a']}-r0" and row["rank"] == 0 and row["runs"] == 2
    assert (row["project"], row["name"], row["tags"], row["state"]) == (project, "lr-0.001", ["sweep", "baseline"],
                                                                        "finished")
    assert (row["wrapper"], row["base"], row["method"]) == ("lightning", "pytorch", "exact")
    assert row["last_step"] == 9
    assert row["config"]["optimizer"] == {"name": "adam", "betas": [0.9, 0.99]}
    assert row["summary"] == {"loss": 0.9, "train/acc": pytest.approx(0.1)}
    assert row["updated_at"] >= row["first_seen"] > 0


def test_sort_by_any_column_numbers_as_numbers(srv, sweep):
    project, uids = sweep
    order = lambda **p: [r["workload_uid"][-1] for r in runs(srv, project, "", **p)["runs"]]  # noqa: E731
    assert order(sort="config.lr", order="asc") == list("abcd")
    assert order(sort="config.lr", order="desc") == list("dcba")
    assert order(sort="summary.loss", order="asc") == list("cbda")
    assert order(sort="step", order="desc") == list("cbad")
    assert order(sort="config.optimizer.name", order="asc")[:2] == list("ab")
    assert order(sort="workload", order="asc") == list("abcd")
    # paging walks the same order
    page = srv.get("/runs", q=f"project:{project}", sort="config.lr", order="asc", limit=2, offset=2).json()
    assert [r["workload_uid"][-1] for r in page["runs"]] == list("cd") and page["total_count"] == 4
    past = srv.get("/runs", q=f"project:{project}", limit=2, offset=10).json()  # past the end: still counted
    assert past["runs"] == [] and past["total_count"] == 4


def test_group_by_a_config_key_counts_in_sql(srv, sweep):
    project, uids = sweep
    got = runs(srv, project, "", group_by="config.optimizer.name", sort="config.lr", order="asc")
    assert got["groups"] == [{"value": "adam", "count": 2}, {"value": "sgd", "count": 2}]
    assert [(r["group_value"], r["workload_uid"][-1]) for r in got["runs"]] == [
        ("adam", "a"), ("adam", "b"), ("sgd", "c"), ("sgd", "d")]
    got = runs(srv, project, "tags:sweep", group_by="config.fp16")
    assert got["groups"] == [{"value": False, "count": 1}, {"value": True, "count": 2}] or \
        got["groups"] == [{"value": True, "count": 2}, {"value": False, "count": 1}]
    got = runs(srv, project, "", group_by="config.lr")  # numbers: in numeric order
    assert [g["value"] for g in got["groups"]] == [0.001, 0.003, 0.01, 0.03]
    got = runs(srv, project, "", group_by="state")
    assert sorted((g["value"], g["count"]) for g in got["groups"]) == [("finished", 2), ("running", 2)]
    got = runs(srv, project, "", group_by="config.nope")  # every run in the "no value" group
    assert got["groups"] == [{"value": None, "count": 4}]


def test_columns_return_only_the_chosen_keys(srv, sweep):
    project, uids = sweep
    got = runs(srv, project, "", columns="config.lr,summary.train/acc,config.optimizer.name,config.nope",
               sort="workload", order="asc")
    row = got["runs"][0]
    assert "config" not in row and "summary" not in row
    assert row["values"] == {"config.lr": 0.001, "summary.train/acc": pytest.approx(0.1),
                             "config.optimizer.name": "adam", "config.nope": None}
    row = runs(srv, project, "", columns="summary", sort="workload", order="asc")["runs"][0]
    assert row["summary"]["loss"] == 0.9 and "config" not in row
    keys = srv.get("/runs/keys").json()
    assert {"lr", "optimizer.name", "optimizer.betas", "seed", "fp16", "note"} <= set(keys["config"])
    assert {"loss", "train/acc"} <= set(keys["summary"])


@pytest.mark.parametrize("q,bad", [
    ("config.lr>=abc", "config.lr>=abc"),
    ("loss<0.5", "loss<0.5"),
    ("config.lr>=", "config.lr>="),
    ("tags>3", "tags>3"),
    ("name>=3", "name>=3"),
    ("config.>1", "config.>1"),
    ('name:"unterminated', 'name:"unterminated'),
    ("step:~3", "step:~3"),
    ("ok >=3", ">=3"),
    ("project:x 1=1", "1=1"),
    ("config.lr>=0.001 foo:bar", "foo:bar"),
])
def test_bad_syntax_is_a_400_naming_the_token(srv, q, bad):
    r = srv.get("/runs", q=q)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "invalid_filter" and body["field"] == "q"
    assert repr(bad) in body["message"], body["message"]


@pytest.mark.parametrize("params,field", [
    ({"sort": "loss"}, "sort"), ({"sort": "config."}, "sort"), ({"group_by": "tags"}, "group_by"),
    ({"columns": "config.lr,nope"}, "columns"), ({"order": "sideways"}, "order"), ({"limit": 0}, "limit"),
    # A quote in a key: SQLite's JSON path quotes keys, so it was a 500 (a JSON path error) there.
    ({"sort": 'config."'}, "sort"), ({"sort": 'config."a"'}, "sort"), ({"group_by": 'config."a.b"'}, "group_by"),
    ({"columns": 'summary.x"y'}, "columns"),
])
def test_bad_sort_group_or_columns_is_a_400(srv, params, field):
    r = srv.get("/runs", **params)
    assert r.status_code == 400 and r.json()["field"] == field, r.text


@pytest.mark.parametrize("q", [
    "name:\"x' OR '1'='1\"",
    "project:x';DROP_TABLE_runs;--",
    "config.lr'):0",
    "config.a')_OR_1=1_--:1",
    "summary.x'||(SELECT_1):~y",
    "tags:'_OR_1=1",
    "%",
    "_",
    "name:~%",
])
def test_injection_attempts_match_nothing_and_break_nothing(srv, sweep, q):
    project, uids = sweep
    r = srv.get("/runs", q=f"project:{project} {q}")
    assert r.status_code == 200, r.text
    assert r.json()["runs"] == []  # taken literally: no run has such a value (LIKE wildcards escaped)
    for k in ("sort", "group_by", "columns"):
        r = srv.get("/runs", q=f"project:{project}", **{k: "config.x'); DROP TABLE runs; --"})
        assert r.status_code == 200, r.text
    # every table is still there and every run still matches
    assert sql_scalar(srv, "SELECT COUNT(*) FROM runs WHERE project = ?", (project,)) == 5
    assert runs(srv, project, "")["total_count"] == 4


def test_runs_data_is_metrics_data_with_max_points_as_columns_per_series(srv, uid):
    """Compare's request: several workloads in one answer, each series as columns, holding
    exactly the points ``metrics/data`` gives each workload with the same ``max_points``."""
    import math

    other = uid + "-b"
    for w, scale in ((uid, 1.0), (other, 2.0)):
        for rank in (0, 1):
            pts = [("loss", s, scale * math.sin(s / 40.0) + rank, T0 + s) for s in range(3000)]
            pts[1234] = ("loss", 1234, "NaN", T0 + 1234)
            pts += [("acc", s, s / 3000, T0 + s) for s in range(0, 3000, 10)]
            r = srv.post("/wandb/metrics", metrics_body(w, pts, rank=rank, run_id=f"{w}-r{rank}"))
            assert r.status_code == 200, r.text
    r = srv.get("/runs/data", workloads=f"{uid},{other},no-such-workload", metrics="loss,acc", max_points=200)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["missing"] == ["no-such-workload"]
    total = 0
    for w in (uid, other):
        ref = srv.get(f"/workloads/{w}/metrics/data", metrics="loss,acc", max_points=200).json()["data"]
        expect = {}
        for p in ref:
            expect.setdefault((p["metric_name"], p["rank"], p["run_id"]), []).append(
                (p["iteration"], p["value"], p["timestamp"], p["row"]))
        cols = {(s["metric_name"], s["rank"], s["run_id"]): list(zip(s["step"], s["value"], s["timestamp"], s["row"]))
                for s in got["series"] if s["workload_uid"] == w}
        assert cols == expect
        assert ("loss", 0, f"{w}-r0") in cols and len(cols) == 4
        assert (1234, "NaN", T0 * 1000 + 1234 * 1000, 1234) in cols[("loss", 0, f"{w}-r0")]  # NaN kept
        total += len(ref)
    assert got["total_count"] == total


@pytest.mark.parametrize("params,field", [
    ({"workloads": "a"}, "max_points"), ({"max_points": 100}, "workloads"),
    ({"workloads": ",".join(f"w{i}" for i in range(101)), "max_points": 100}, "workloads"),
    ({"workloads": "a", "max_points": 2}, "max_points"), ({"workloads": "a", "max_points": 100, "rank": "x"}, "rank"),
])
def test_runs_data_bad_parameters_are_400(srv, params, field):
    r = srv.get("/runs/data", **params)
    assert r.status_code == 400 and r.json()["field"] == field, r.text


@pytest.mark.parametrize("path,params,field", [
    ("/runs", {"q": "name:a\x00b"}, "q"), ("/runs", {"sort": "config.a\x00"}, "sort"),
    ("/runs", {"group_by": "config.\x00"}, "group_by"), ("/runs", {"columns": "config.\x00"}, "columns"),
    ("/runs/data", {"workloads": "a\x00", "max_points": 10}, "workloads"),
    ("/runs/data", {"workloads": "a", "metrics": "l\x00", "max_points": 10}, "metrics"),
    ("/workloads", {"search": "\x00"}, "search"), ("/workloads/a\x00b", {}, "workload_uid"),
    ("/workloads/a\x00b/metrics/data", {}, "workload_uid"),
])
def test_a_nul_character_is_a_400_not_a_500(srv, path, params, field):
    """PostgreSQL text cannot hold NUL: such a parameter is refused before any query."""
    r = srv.get(path, **params)
    assert r.status_code == 400 and r.json()["field"] == field, r.text
