"""Contract tests of deploy/grafana against the real Lens server.

Grafana cannot run here, so these tests do with the provisioned files what Grafana and
its Infinity data source (yesoreyeram-infinity-datasource, read at v3.11.1; see
docs/grafana.md) do with them, against a real server process holding real points:

* dashboard variables are resolved in order from their own queries and substituted the
  way Grafana's template service does (``$var``, ``${var}``, a repeated panel's value,
  ``${__from}`` / ``${__to}`` in epoch ms); alert rules get only Infinity's
  ``${__from}`` / ``${__to}`` macros (alert rules have no dashboard variables);
* each request is built as Infinity's backend builds it (``GetQueryURL``): data source URL
  + query ``url``, ``url_options.params`` added as query parameters, the data source's
  bearer token (the server's *read* token when the server has roles) in
  ``Authorization``;
* the answer must be 200, the ``root_selector`` (a GJSON path for parser ``backend``)
  must exist, and every column's selector must exist in every row: Infinity itself
  would silently show an empty column for a field the API does not return, so this is
  where a misspelt field fails;
* values are typed like Infinity's framer (``number`` parses the strings "NaN",
  "Infinity", "-Infinity"; ``timestamp_epoch`` is epoch ms), the panels'
  ``partitionByValues`` split is applied, and the alert rules' ``filterExpression`` and
  ``summarizeExpression`` / ``summarizeBy`` are evaluated to the numbers Grafana's
  threshold sees.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
import urllib.parse
from pathlib import Path

import pytest
import requests
import yaml

from helpers.ui import LensServer, point, server_available

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "primus-lens-training-metrics.json"
DATASOURCE = GRAFANA / "provisioning" / "datasources" / "primus-lens.yaml"
PROVIDER = GRAFANA / "provisioning" / "dashboards" / "primus-lens.yaml"
ALERTING = GRAFANA / "provisioning" / "alerting" / "primus-lens.yaml"
PLUGIN = "yesoreyeram-infinity-datasource"
INFINITY_MIN_GRAFANA = (11, 6, 0)          # plugin.json grafanaDependency ">=11.6.0-0" (v3.11.1)
COLUMN_TYPES = {"string", "number", "timestamp_epoch"}
WORKLOAD_PLACEHOLDER = "REPLACE-WITH-WORKLOAD-UID"

WORKLOAD = "grafana-contract-workload-0001"
OTHER = "grafana-contract-other-0002"
ALERT_NAN = "grafana-alert-nan-0003"
ALERT_FINITE = "grafana-alert-finite-0004"
STALLED = "grafana-alert-stalled-0005"
FINISHED = "grafana-alert-finished-0006"
ADMIN_TOKEN = "grafana-contract-admin-token"
READ_TOKEN = "grafana-contract-read-token"
STEPS = 40
METRICS = ("accuracy", "learning_rate", "loss")


# ---- the provisioned files ------------------------------------------------------------------

def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def load_datasource() -> dict:
    (ds,) = yaml.safe_load(DATASOURCE.read_text())["datasources"]
    return ds


def load_rules() -> list:
    doc = yaml.safe_load(ALERTING.read_text())
    assert doc["apiVersion"] == 1
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_targets(dash: dict) -> list:
    """(where, target) for every Infinity query of the dashboard, variables included."""
    out = [(f"variable {v['name']}", v["query"]["infinityQuery"])
           for v in dash["templating"]["list"] if v["type"] == "query"]
    out += [(f"panel {p['title']!r}", t) for p in dash["panels"] for t in p["targets"]]
    return out


def rule_queries(rule: dict) -> list:
    return [q for q in rule["data"] if q["datasourceUid"] != "__expr__"]


def test_datasource_is_infinity_with_the_read_token():
    ds = load_datasource()
    assert ds["name"] == "Primus Lens Metrics" and ds["uid"] == "primus-lens-metrics"
    assert ds["type"] == PLUGIN and ds["access"] == "proxy"
    assert ds["url"] == "http://primus-lens-telemetry-processor:8080/api/v1"
    # Infinity's settings (pkg/models/settings.go): auth_method "bearerToken" takes
    # secureJsonData.bearerToken; credentials only go to allowedHosts.
    assert ds["jsonData"]["auth_method"] == "bearerToken"
    assert ds["secureJsonData"] == {"bearerToken": "${PRIMUS_LENS_READ_TOKEN}"}
    assert ds["url"] in ds["jsonData"]["allowedHosts"]
    assert ds["jsonData"]["customHealthCheckEnabled"] is True
    assert ds["jsonData"]["customHealthCheckUrl"] == ds["url"]      # GET /api/v1: the index


def test_provider_and_kustomization_ship_every_file():
    (provider,) = yaml.safe_load(PROVIDER.read_text())["providers"]
    assert provider["type"] == "file"
    kustomization = yaml.safe_load((GRAFANA / "kustomization.yaml").read_text())
    files = [f for gen in kustomization["configMapGenerator"] for f in gen["files"]]
    for f in files:
        assert (GRAFANA / f).is_file(), f
    shipped = {str(p.relative_to(GRAFANA)) for p in GRAFANA.rglob("*") if p.suffix in (".json", ".yaml")}
    assert shipped - {"kustomization.yaml"} == set(files)
    assert "GF_INSTALL_PLUGINS=" + PLUGIN in (GRAFANA / "kustomization.yaml").read_text()


def _version(text: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def test_inputs_and_requires_match_every_reference_of_the_dashboard():
    dash = load_dashboard()
    text = DASHBOARD.read_text()
    (ds_input,) = dash["__inputs"]
    assert ds_input == {**ds_input, "name": "DS_PRIMUS_LENS", "type": "datasource", "pluginId": PLUGIN}
    # Every ${DS_*} placeholder the import replaces is declared, and every input is used.
    assert set(re.findall(r"\$\{(DS_[A-Z0-9_]+)\}", text)) == {i["name"] for i in dash["__inputs"]}

    # All queries go through the `datasource` variable: on import it starts at the chosen
    # data source (${DS_PRIMUS_LENS}); provisioned, it falls back to the Infinity data source.
    (ds_var,) = [v for v in dash["templating"]["list"] if v["type"] == "datasource"]
    assert ds_var["query"] == PLUGIN
    assert ds_var["current"]["value"] == "${DS_PRIMUS_LENS}"
    expected = {"type": PLUGIN, "uid": "${" + ds_var["name"] + "}"}
    refs = [v["datasource"] for v in dash["templating"]["list"] if v["type"] == "query"]
    for panel in dash["panels"]:
        refs.append(panel["datasource"])
    refs += [t["datasource"] for _, t in dashboard_targets(dash)]
    assert refs and all(r == expected for r in refs), refs

    requires = {(r["type"], r["id"]): r for r in dash["__requires"]}
    assert {i["pluginId"] for i in dash["__inputs"]} == {i for (k, i) in requires if k == "datasource"}
    assert {p["type"] for p in dash["panels"]} == {i for (k, i) in requires if k == "panel"}
    assert _version(requires[("grafana", "grafana")]["version"]) >= INFINITY_MIN_GRAFANA
    assert _version(requires[("datasource", PLUGIN)]["version"]) >= (3, 0, 0)


def test_every_query_is_a_backend_json_url_query():
    """Parser ``backend``: the one alert rules can run, and the one Infinity applies
    root_selector/columns with (GJSON) in Grafana's server for panels too."""
    where_targets = dashboard_targets(load_dashboard())
    where_targets += [(f"rule {r['uid']}", q["model"]) for r in load_rules() for q in rule_queries(r)]
    assert len(where_targets) >= 8
    for where, t in where_targets:
        assert (t["type"], t["source"], t["parser"]) == ("json", "url", "backend"), where
        assert t["url"].startswith("/"), where            # relative to the data source URL
        assert t["url_options"]["method"] == "GET", where
        assert t["columns"] and {c["type"] for c in t["columns"]} <= COLUMN_TYPES, where
        assert all(c["selector"] and c["text"] for c in t["columns"]), where


def test_metric_panels_follow_the_time_picker_and_show_time_and_step():
    dash = load_dashboard()
    data_panels = [p for p in dash["panels"] if p["targets"][0]["url"].endswith("/metrics/data")]
    by_type = {p["type"]: p for p in data_panels}
    assert set(by_type) == {"timeseries", "trend"}
    for panel in data_panels:
        params = {kv["key"]: kv["value"] for kv in panel["targets"][0]["url_options"]["params"]}
        assert params["start"] == "${__from}" and params["end"] == "${__to}"
        assert params["metrics"] == "${metric}"
        # A multi-value variable would interpolate as {a,b}: one panel per metric instead.
        assert panel["repeat"] == "metric"
    trend = by_type["trend"]
    x_column = next(c for c in trend["targets"][0]["columns"] if c["selector"] == "iteration")
    assert trend["options"]["xField"] == x_column["text"] and x_column["type"] == "number"
    join = next(t for t in trend["transformations"] if t["id"] == "joinByField")
    assert join["options"]["byField"] == x_column["text"]
    names = [v["name"] for v in dash["templating"]["list"] if v["type"] == "query"]
    assert names == ["workload", "data_source", "metric"]


def test_alert_rules_parse_and_use_the_provisioned_datasource():
    uid = load_datasource()["uid"]
    rules = load_rules()
    assert {r["uid"] for r in rules} == {"primus-lens-run-stalled", "primus-lens-loss-not-finite"}
    for rule in rules:
        refs = {q["refId"] for q in rule["data"]}
        assert rule["condition"] in refs
        assert rule["noDataState"] in ("OK", "NoData", "Alerting", "KeepLast")
        assert rule["execErrState"] in ("OK", "Error", "Alerting", "KeepLast")
        # Grafana expands $VAR in these provisioned strings (not in `model`).
        assert "$" not in rule["title"] + rule["uid"]
        for q in rule["data"]:
            assert q["model"]["refId"] == q["refId"]
            if q["datasourceUid"] == "__expr__":
                assert q["model"]["expression"] in refs - {q["refId"]}
            else:
                assert q["datasourceUid"] == uid
                assert q["model"]["datasource"] == {"type": PLUGIN, "uid": uid}
                assert q["relativeTimeRange"]["from"] > q["relativeTimeRange"]["to"] >= 0


# ---- what Grafana + Infinity do -------------------------------------------------------------

VAR = re.compile(r"\$\{([A-Za-z0-9_]+)(?::([a-z]+))?\}|\$([A-Za-z0-9_]+)")


def interpolate(text: str, variables: dict) -> str:
    """Grafana's templateSrv.replace (Infinity passes format 'glob')."""
    def sub(m):
        name = m.group(1) or m.group(3)
        if name not in variables:
            raise AssertionError(f"{text!r} uses ${name}, which is not defined here")
        value = variables[name]
        if isinstance(value, list):
            return "{" + ",".join(value) + "}" if len(value) > 1 else value[0]
        return str(value)
    return VAR.sub(sub, text)


def substitute(target: dict, variables: dict) -> dict:
    """The fields Infinity's interpolateQuery substitutes (url, params, headers, root_selector,
    filter/summarize expressions); the columns are taken literally."""
    t = json.loads(json.dumps(target))
    t["url"] = interpolate(t["url"], variables)
    for kv in t["url_options"]["params"] + t["url_options"]["headers"]:
        kv["value"] = interpolate(kv["value"], variables)
    for key in ("root_selector", "filterExpression", "summarizeExpression"):
        if t.get(key):
            t[key] = interpolate(t[key], variables)
    return t


def request_url(base: str, t: dict) -> str:
    """Infinity's GetQueryURL: base + url unless url already starts with it; params via
    url.Values.Add + Encode (sorted by key, '+' for spaces)."""
    url = t["url"] if t["url"].startswith(base) else base + t["url"]
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query += [(kv["key"], kv["value"]) for kv in t["url_options"]["params"]]
    encoded = urllib.parse.urlencode(sorted(query, key=lambda kv: kv[0]))
    return urllib.parse.urlunsplit(parts._replace(query=encoded))


_MISSING = object()


def gjson_get(doc, path: str):
    """The GJSON paths used here: dot-separated keys (no wildcards or queries)."""
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", path), \
        f"selector {path!r}: only plain GJSON key paths are modelled by this test"
    for key in path.split("."):
        if not isinstance(doc, dict) or key not in doc:
            return _MISSING
        doc = doc[key]
    return doc


def go_parse_float(v):
    """strconv.ParseFloat as Infinity's number column uses it (NaN, Inf, Infinity accepted)."""
    if isinstance(v, bool):
        raise AssertionError(f"boolean {v} in a number column")
    if isinstance(v, (int, float)):
        return float(v)
    assert isinstance(v, str) and re.fullmatch(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|nan|inf|infinity)", v, re.I), v
    return float(v)


def typed(values: list, kind: str, where: str) -> list:
    if kind == "string":
        return [None if v is None else v if isinstance(v, str) else json.dumps(v) for v in values]
    if kind == "number":
        return [None if v is None else go_parse_float(v) for v in values]
    if kind == "timestamp_epoch":
        assert all(isinstance(v, (int, float)) and v > 1e12 for v in values), f"{where}: not epoch ms: {values[:3]}"
        return values
    raise AssertionError(f"{where}: column type {kind!r}")


def govaluate(expression: str, row: dict) -> bool:
    """The govaluate subset the alert rules use: ==, !=, <, >, -, &&, ||, 'strings', numbers, names."""
    tokens = re.findall(r"'[^']*'|\d+(?:\.\d+)?|[A-Za-z_][A-Za-z0-9_]*|&&|\|\||==|!=|<=|>=|[<>\-()]", expression)
    assert "".join(tokens) == re.sub(r"\s+", "", expression), f"unmodelled syntax in {expression!r}"
    py = []
    for tok in tokens:
        if tok == "&&":
            py.append(" and ")
        elif tok == "||":
            py.append(" or ")
        elif re.fullmatch(r"[A-Za-z_]\w*", tok):
            assert tok in row, f"{expression!r} names {tok!r}, not a column ({sorted(row)})"
            py.append(f"row[{tok!r}]")
        else:
            py.append(tok)
    return bool(eval("".join(py), {"__builtins__": {}}, {"row": row}))


def run_query(server: LensServer, base: str, target: dict, variables: dict, token: str) -> dict:
    """Fields {column text: values} of one query, as Infinity's backend frames it
    (with its filter and summarize steps when the query has them)."""
    t = substitute(target, variables)
    url = request_url(base, t)
    response = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert response.status_code == 200, f"{url} -> {response.status_code} {response.text[:300]}"
    body = response.json()
    root = body if not t["root_selector"] else gjson_get(body, t["root_selector"])
    assert root is not _MISSING, f"{url}: root_selector {t['root_selector']!r} is not in the answer"
    rows = root if isinstance(root, list) else [root]
    fields = {}
    for c in t["columns"]:
        raw = [gjson_get(row, c["selector"]) for row in rows]
        assert all(v is not _MISSING for v in raw), f"{url}: column {c['selector']!r} missing from the answer"
        fields[c["text"]] = typed(raw, c["type"], f"{url} {c['selector']}")
    if t.get("filterExpression"):
        keep = [govaluate(t["filterExpression"], {k: v[i] for k, v in fields.items()}) for i in range(len(rows))]
        fields = {k: [x for x, ok in zip(v, keep) if ok] for k, v in fields.items()}
    if t.get("summarizeExpression"):
        m = re.fullmatch(r"count\((\w+)\)", t["summarizeExpression"])
        assert m and m.group(1) in fields and t["summarizeBy"] in fields, t["summarizeExpression"]
        counts = {}
        for key in fields[t["summarizeBy"]]:
            counts[key] = counts.get(key, 0) + 1
        fields = {t["summarizeBy"]: list(counts), t["summarizeAlias"]: [float(n) for n in counts.values()]}
    return fields


def partition(fields: dict, by: list) -> dict:
    """Grafana's partitionByValues: one frame per distinct combination of the `by` fields."""
    frames = {}
    n = len(next(iter(fields.values())))
    for i in range(n):
        key = tuple(fields[b][i] for b in by)
        frame = frames.setdefault(key, {k: [] for k in fields if k not in by})
        for k in frame:
            frame[k].append(fields[k][i])
    return frames


def resolve_variables(server, base, dash, chosen, token) -> tuple:
    """Resolve each query variable in order from its own query; returns ({name: value}, {name: options})."""
    variables, options = {}, {}
    for var in dash["templating"]["list"]:
        if var["type"] == "datasource":
            continue
        if var["type"] == "custom":
            options[var["name"]] = [o["value"] for o in var["options"]]
            variables[var["name"]] = var["current"]["value"]
            continue
        fields = run_query(server, base, var["query"]["infinityQuery"], variables, token)
        (values,) = fields.values()        # one column: Infinity uses it as text and value
        assert values, f"variable {var['name']} has no values"
        assert all(isinstance(v, str) and v for v in values), values
        options[var["name"]] = values
        variables[var["name"]] = chosen.get(var["name"], values[0])
    return variables, options


# ---- against the real server ----------------------------------------------------------------

def server_has_roles() -> bool:
    """True once the server has the read-only role (--read-token); before that the one
    (admin) token stands in for it."""
    from primus_lens_wandb_exporter.server import cli
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return "--read-token" in parser._option_string_actions


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    reason = server_available()
    if reason:
        pytest.skip(reason)
    from helpers.server import LensServer as ServerProcess
    workdir = tmp_path_factory.mktemp("grafana")
    roles = server_has_roles()
    process = ServerProcess(f"sqlite:///{workdir}/lens.db", workdir / "server.log", ADMIN_TOKEN,
                            ["--read-token", READ_TOKEN] if roles else [])
    s = LensServer(process.start())
    s.read_token = READ_TOKEN if roles else ADMIN_TOKEN
    s.roles = roles
    t0 = int(time.time()) - 3600      # whole seconds: Grafana sends integer ms
    s.detection(WORKLOAD, "primus", "megatron", "exact", 1.0)
    s.run_event(WORKLOAD, "run-g", "started", project="grafana", name="contract", status="running")
    for rank in (0, 1):
        pts = []
        for step in range(STEPS):
            ts = t0 + step * 60           # one point per minute over the last hour
            loss = float("nan") if (rank, step) == (0, 7) else 2.0 / (step + 1) + rank
            pts += [point("loss", loss, step, ts), point("accuracy", step / STEPS, step, ts),
                    point("learning_rate", 1e-4, step, ts)]
        s.metrics(WORKLOAD, pts, rank=rank, world_size=2, run_id="run-g")
    s.metrics(OTHER, [point("loss", 1.0, 0, t0)], run_id="other")

    # Alert rule data: recent points (inside the rules' 10-minute window).
    now = time.time()
    for rank, bad in ((0, float("inf")), (1, float("nan"))):
        s.metrics(ALERT_NAN, [point("loss", 1.0, 0, now - 300), point("loss", bad, 1, now - 240),
                              point("loss", 0.5, 2, now - 180)], rank=rank, world_size=2, run_id="run-a")
    s.metrics(ALERT_NAN, [point("loss", float("-inf"), 3, now - 120)], rank=1, world_size=2, run_id="run-a")
    s.metrics(ALERT_FINITE, [point("loss", 1.0 / (i + 1), i, now - 300 + i) for i in range(5)], run_id="run-f")
    s.run_event(STALLED, "run-s", "started", project="grafana", status="running")      # no point since
    s.run_event(FINISHED, "run-d", "started", project="grafana", status="running")
    s.run_event(FINISHED, "run-d", "finished", project="grafana", status="finished", exit_code=0)
    s.t0_ms = t0 * 1000
    yield s
    s.stop()


def window(server, first_step=0, last_step=STEPS - 1):
    return {"__from": str(int(server.t0_ms + first_step * 60_000)), "__to": str(int(server.t0_ms + last_step * 60_000))}


def test_variables_resolve_from_their_queries(server):
    dash = load_dashboard()
    variables, options = resolve_variables(server, server.api, dash, {"workload": WORKLOAD}, server.read_token)
    assert {WORKLOAD, OTHER, ALERT_NAN} <= set(options["workload"])
    assert options["data_source"] == ["wandb"]
    assert sorted(options["metric"]) == sorted(METRICS)
    assert variables["max_points"] in options["max_points"]


def test_every_panel_query_answers_with_its_columns(server):
    dash = load_dashboard()
    variables, options = resolve_variables(server, server.api, dash, {"workload": WORKLOAD}, server.read_token)
    variables.update(window(server))
    checked = 0
    for panel in dash["panels"]:
        repeat = panel.get("repeat")
        for value in (options[repeat] if repeat else [None]):
            scoped = dict(variables, **({repeat: value} if repeat else {}))
            for target in panel["targets"]:
                fields = run_query(server, server.api, target, scoped, server.read_token)
                assert fields and all(len(v) > 0 for v in fields.values()), (panel["title"], fields)
                assert all(v is not None for c in target["columns"] if c["type"] != "string"
                           for v in fields[c["text"]]), panel["title"]
                part = next((t for t in panel.get("transformations", []) if t["id"] == "partitionByValues"), None)
                if part:
                    frames = partition(fields, part["options"]["fields"])
                    assert sorted(frames) == [("0", "run-g"), ("1", "run-g")]     # one series per rank/run
                    x = panel["options"].get("xField", "Time")
                    for frame in frames.values():
                        assert len(frame[x]) == STEPS
                        assert frame[x] == sorted(frame[x])     # time series and trend need ascending x
                    if panel["type"] == "trend":
                        assert frames[("0", "run-g")][x] == list(range(STEPS))     # x = the step
                checked += 1
    assert checked == 3 + 2 * len(METRICS)


def test_the_points_stat_shows_the_workloads_points(server):
    """The stat "Points stored" read metrics/sources' total_count, which counts data sources
    (it showed 1 for a workload of 240 points)."""
    dash = load_dashboard()
    variables, _ = resolve_variables(server, server.api, dash, {"workload": WORKLOAD}, server.read_token)
    (panel,) = [p for p in dash["panels"] if p["title"].startswith("Points stored")]
    (fields,) = [run_query(server, server.api, t, variables, server.read_token) for t in panel["targets"]]
    assert fields == {"points": [2 * STEPS * len(METRICS)]}


def test_metric_panels_follow_the_time_picker_and_keep_nan(server):
    dash = load_dashboard()
    panel = next(p for p in dash["panels"] if p["type"] == "timeseries")
    variables, _ = resolve_variables(server, server.api, dash, {"workload": WORKLOAD}, server.read_token)
    variables["metric"] = "loss"
    target = panel["targets"][0]

    everything = run_query(server, server.api, target, dict(variables, **window(server)), server.read_token)
    frames = partition(everything, ["rank", "run_id"])
    assert len(frames[("0", "run-g")]["Time"]) == STEPS
    assert sum(1 for v in frames[("0", "run-g")]["value"] if math.isnan(v)) == 1   # NaN arrives as a number

    first_ten = run_query(server, server.api, target, dict(variables, **window(server, 0, 9)), server.read_token)
    assert len(first_ten["Time"]) == 2 * 10
    assert max(first_ten["Time"]) <= server.t0_ms + 9 * 60_000

    before = {"__from": str(int(server.t0_ms - 7_200_000)), "__to": str(int(server.t0_ms - 3_600_000))}
    nothing = run_query(server, server.api, target, dict(variables, **before), server.read_token)
    assert all(len(v) == 0 for v in nothing.values())


def rule(uid: str) -> dict:
    return next(r for r in load_rules() if r["uid"] == uid)


def evaluate_rule(server, r: dict, workload: str = "") -> dict:
    """The condition's input: {label value: number} from the rule's Infinity query over its
    relative time range ending now, then Grafana's threshold."""
    (q,) = rule_queries(r)
    now_ms = int(time.time() * 1000)
    macros = {"__from": str(now_ms - q["relativeTimeRange"]["from"] * 1000),
              "__to": str(now_ms - q["relativeTimeRange"]["to"] * 1000)}
    model = json.loads(json.dumps(q["model"]).replace(WORKLOAD_PLACEHOLDER, workload))
    fields = run_query(server, server.api, model, macros, server.read_token)
    by, alias = model["summarizeBy"], model["summarizeAlias"]
    numbers = dict(zip(fields[by], fields[alias]))
    (threshold,) = [d["model"] for d in r["data"] if d["refId"] == r["condition"]]
    assert threshold["type"] == "threshold" and threshold["expression"] == q["refId"]
    (cond,) = threshold["conditions"]
    assert cond["evaluator"]["type"] == "gt"
    limit = cond["evaluator"]["params"][0]
    return {k: v for k, v in numbers.items() if v > limit}


def test_alert_rule_non_finite_loss_fires_per_rank(server):
    r = rule("primus-lens-loss-not-finite")
    assert WORKLOAD_PLACEHOLDER in rule_queries(r)[0]["model"]["url"]
    assert evaluate_rule(server, r, ALERT_NAN) == {"0": 1.0, "1": 2.0}     # +Inf on 0; NaN and -Inf on 1
    assert evaluate_rule(server, r, ALERT_FINITE) == {}                     # no row: noDataState
    assert r["noDataState"] == "OK"
    # The NaN of the contract workload is an hour old: outside the rule's 10 minutes.
    assert evaluate_rule(server, r, WORKLOAD) == {}


def test_alert_rule_stalled_run_fires_per_workload(server):
    r = rule("primus-lens-run-stalled")
    server.metrics(ALERT_FINITE, [point("loss", 0.1, 99, time.time())], run_id="run-f")    # live now
    firing = evaluate_rule(server, r)
    # STALLED: a run started, no point since; FINISHED: its runs finished; ALERT_FINITE
    # had a point a moment ago (live).
    assert STALLED in firing
    assert FINISHED not in firing and ALERT_FINITE not in firing
    assert r["noDataState"] == "OK" and r["for"] == "15m"


def test_datasource_health_check_and_token(server):
    """Infinity's custom health check GETs customHealthCheckUrl with the data source's token."""
    ds = load_datasource()
    url = server.api + ds["jsonData"]["customHealthCheckUrl"][len(ds["url"]):]
    assert requests.get(url, headers={"Authorization": f"Bearer {server.read_token}"}, timeout=10).status_code == 200
    assert requests.get(url, timeout=10).status_code == 401      # the token of the data source matters
    if server.roles:
        # The token Grafana holds cannot write: a leaked Grafana secret ingests nothing.
        response = requests.post(server.api + "/wandb/batch", json={},
                                 headers={"Authorization": f"Bearer {server.read_token}"}, timeout=10)
        assert response.status_code == 403
