"""Contract tests of deploy/grafana against the real Lens server.

Grafana cannot run here, so these tests do what Grafana and the JSON API data source
plugin (marcusolsson-json-datasource) do with the provisioned files: resolve the
dashboard variables from their own queries, interpolate ``$var`` / ``${var}`` and
``${__from}`` / ``${__to}``, build each request URL the way the plugin does (data source
URL + ``urlPath``, duplicate slashes collapsed, ``params`` appended), evaluate every
field's JSONPath on the real response, and type the values the way the plugin's
``parseValues`` does (time: epoch ms, number: parseFloat, string: toString), including
its ``experimentalGroupByField`` split.  A path that does not match the API's
response shape, a parameter the API rejects or a variable that resolves to nothing
fails here.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.parse
from pathlib import Path

import pytest
import requests
import yaml
from jsonpath_ng import parse as jsonpath

from lens import LensServer, point, server_available

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "primus-lens-training-metrics.json"
DATASOURCE = GRAFANA / "provisioning" / "datasources" / "primus-lens.yaml"
PROVIDER = GRAFANA / "provisioning" / "dashboards" / "primus-lens.yaml"
PLUGIN = "marcusolsson-json-datasource"

WORKLOAD = "grafana-contract-workload-0001"
OTHER = "grafana-contract-other-0002"
TOKEN = "grafana-contract-token"
STEPS = 40
METRICS = ("accuracy", "learning_rate", "loss")


# ---- the provisioned files ------------------------------------------------------------------

def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def load_datasource() -> dict:
    (ds,) = yaml.safe_load(DATASOURCE.read_text())["datasources"]
    return ds


def test_datasource_is_the_json_api_plugin_named_as_the_guide_says():
    ds = load_datasource()
    assert ds["name"] == "Primus Lens Metrics"
    assert ds["type"] == PLUGIN
    assert ds["access"] == "proxy"
    assert ds["url"] == "http://primus-lens-telemetry-processor:8080/api/v1"
    assert ds["jsonData"]["httpHeaderName1"] == "Authorization"
    assert ds["secureJsonData"]["httpHeaderValue1"] == "Bearer ${PRIMUS_LENS_API_TOKEN}"


def test_dashboard_provider_and_kustomization_point_at_the_dashboard_file():
    (provider,) = yaml.safe_load(PROVIDER.read_text())["providers"]
    assert provider["type"] == "file"
    kustomization = yaml.safe_load((GRAFANA / "kustomization.yaml").read_text())
    files = [f for gen in kustomization["configMapGenerator"] for f in gen["files"]]
    for f in files:
        assert (GRAFANA / f).is_file(), f
    assert str(DASHBOARD.relative_to(GRAFANA)) in files


def test_every_query_of_the_dashboard_uses_the_provisioned_datasource():
    uid = load_datasource()["uid"]
    dash = load_dashboard()
    refs = [v["datasource"] for v in dash["templating"]["list"] if v["type"] == "query"]
    for panel in dash["panels"]:
        refs.append(panel["datasource"])
        refs += [t["datasource"] for t in panel["targets"]]
    assert refs and all(r == {"type": PLUGIN, "uid": uid} for r in refs)


def test_metric_panels_follow_the_time_picker_and_repeat_per_metric():
    dash = load_dashboard()
    data_panels = [p for p in dash["panels"] for t in p["targets"] if t["urlPath"].endswith("/metrics/data")]
    assert data_panels
    for panel in data_panels:
        params = dict(panel["targets"][0]["params"])
        assert params["start"] == "${__from}" and params["end"] == "${__to}"
        assert params["metrics"] == "${metric}"
        # A multi-value variable would interpolate as {a,b}: one panel per metric instead.
        assert panel["repeat"] == "metric"
    names = [v["name"] for v in dash["templating"]["list"]]
    assert names[:3] == ["workload", "data_source", "metric"]


# ---- what Grafana + the plugin do -----------------------------------------------------------

VAR = re.compile(r"\$\{([A-Za-z0-9_]+)(?::([a-z]+))?\}|\$([A-Za-z0-9_]+)")


def interpolate(text: str, variables: dict) -> str:
    def sub(m):
        name = m.group(1) or m.group(3)
        fmt = m.group(2)
        if name not in variables:
            raise AssertionError(f"{text!r} uses ${name}, which the dashboard does not define")
        value = variables[name]
        if isinstance(value, list):
            return ",".join(value) if fmt == "csv" else ("{" + ",".join(value) + "}" if len(value) > 1 else value[0])
        return str(value)
    return VAR.sub(sub, text)


def request_url(base: str, target: dict, variables: dict) -> str:
    url = (base + interpolate(target["urlPath"], variables))
    scheme, rest = url.split("://", 1)
    url = scheme + "://" + re.sub(r"/+", "/", rest)
    params = [(interpolate(k, variables), interpolate(v, variables)) for k, v in target.get("params", []) if k]
    if params:
        url += ("&" if "?" in url else "?") + "&".join(
            f"{urllib.parse.quote(k, safe='')}={urllib.parse.quote(v, safe='')}" for k, v in params)
    return url


def parse_values(values: list, kind: str) -> list:
    """The plugin's parseValues, in Python."""
    present = [v for v in values if v is not None]
    if kind == "time":
        assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present), values[:5]
        return values if any(v >= 1e12 for v in present) or not present else [v * 1000 for v in values]
    if kind == "number":
        out = []
        for v in values:
            if v is None or isinstance(v, (int, float)) and not isinstance(v, bool):
                out.append(v)
            else:
                out.append(float(v))     # parseFloat: "NaN", "Infinity" -> nan, inf; anything else raises
        return out
    if kind == "string":
        return [v if v is None or isinstance(v, str) else str(v) for v in values]
    raise AssertionError(f"unsupported field type {kind!r}")


def run_query(server: LensServer, base: str, target: dict, variables: dict) -> dict:
    """Fields {name: values} of one query, exactly as the plugin would build its frame."""
    url = request_url(base, target, variables)
    response = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert response.status_code == 200, f"{url} -> {response.status_code} {response.text[:300]}"
    body = response.json()
    fields = {}
    for f in target["fields"]:
        assert f.get("language", "jsonpath") == "jsonpath"
        values = [m.value for m in jsonpath(interpolate(f["jsonPath"], variables)).find(body)]
        name = interpolate(f.get("name") or f["jsonPath"].split(".")[-1], variables)
        fields[name] = parse_values(values, f.get("type") or "string")
    lengths = {len(v) for v in fields.values()}
    assert len(lengths) <= 1, f"Fields have different lengths: { {k: len(v) for k, v in fields.items()} }"
    return fields


def group_by(fields: dict, name: str) -> dict:
    keys = fields[name]
    frames = {}
    for i, key in enumerate(keys):
        frame = frames.setdefault(str(key), {k: [] for k in fields if k != name})
        for k, values in fields.items():
            if k != name:
                frame[k].append(values[i])
    return frames


def resolve_variables(server, base, dash, chosen) -> dict:
    """Resolve each query variable in order from its own query; returns {name: values}."""
    variables, options = {}, {}
    for var in dash["templating"]["list"]:
        if var["type"] == "custom":
            options[var["name"]] = [o["value"] for o in var["options"]]
            variables[var["name"]] = var["current"]["value"]
            continue
        fields = run_query(server, base, var["query"], variables)
        (values,) = fields.values()
        assert values, f"variable {var['name']} has no values"
        assert all(isinstance(v, str) and v for v in values), values
        options[var["name"]] = values
        variables[var["name"]] = chosen.get(var["name"], values[0])
    return variables, options


# ---- against the real server ----------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    reason = server_available()
    if reason:
        pytest.skip(reason)
    s = LensServer.start(tmp_path_factory.mktemp("grafana"), token=TOKEN)
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
    s.t0_ms = t0 * 1000
    yield s
    s.stop()


def window(server, first_step=0, last_step=STEPS - 1):
    return {"__from": str(int(server.t0_ms + first_step * 60_000)), "__to": str(int(server.t0_ms + last_step * 60_000))}


def test_variables_resolve_from_sources_and_available(server):
    dash = load_dashboard()
    variables, options = resolve_variables(server, server.api, dash, {"workload": WORKLOAD})
    assert {WORKLOAD, OTHER} <= set(options["workload"])
    assert options["data_source"] == ["wandb"]
    assert sorted(options["metric"]) == sorted(METRICS)
    assert variables["max_points"] in options["max_points"]


def test_every_panel_query_returns_typed_non_empty_frames(server):
    dash = load_dashboard()
    variables, options = resolve_variables(server, server.api, dash, {"workload": WORKLOAD})
    variables.update(window(server))
    checked = 0
    for panel in dash["panels"]:
        repeat = panel.get("repeat")
        for value in (options[repeat] if repeat else [None]):
            scoped = dict(variables, **({repeat: value} if repeat else {}))
            for target in panel["targets"]:
                fields = run_query(server, server.api, target, scoped)
                assert fields and all(len(v) > 0 for v in fields.values()), (panel["title"], fields)
                for f in target["fields"]:
                    values = fields[interpolate(f["name"], scoped)]
                    if f["type"] == "time":
                        assert all(v > 1e12 for v in values)          # epoch ms
                    elif f["type"] == "number":
                        assert all(isinstance(v, (int, float)) for v in values)
                    else:
                        assert all(v is None or isinstance(v, str) for v in values)
                group = target.get("experimentalGroupByField")
                if group:
                    frames = group_by(fields, group)
                    assert sorted(frames) == ["0", "1"]       # one series per rank
                    for frame in frames.values():
                        assert len(frame["Time"]) == STEPS
                        assert frame["Time"] == sorted(frame["Time"])
                checked += 1
    assert checked == 2 + len(METRICS) + 1


def test_metric_panel_follows_the_time_picker_and_keeps_nan(server):
    dash = load_dashboard()
    panel = next(p for p in dash["panels"] if p.get("repeat") == "metric")
    variables, _ = resolve_variables(server, server.api, dash, {"workload": WORKLOAD})
    variables["metric"] = "loss"

    everything = run_query(server, server.api, panel["targets"][0], dict(variables, **window(server)))
    frames = group_by(everything, "rank")
    assert len(frames["0"]["Time"]) == STEPS
    assert sum(1 for v in frames["0"]["loss"] if math.isnan(v)) == 1       # NaN arrives, as a number

    first_ten = run_query(server, server.api, panel["targets"][0], dict(variables, **window(server, 0, 9)))
    assert len(first_ten["Time"]) == 2 * 10
    assert max(first_ten["Time"]) <= server.t0_ms + 9 * 60_000

    before = {"__from": str(int(server.t0_ms - 7_200_000)), "__to": str(int(server.t0_ms - 3_600_000))}
    nothing = run_query(server, server.api, panel["targets"][0], dict(variables, **before))
    assert all(len(v) == 0 for v in nothing.values())


def test_datasource_save_and_test_gets_200_from_the_base_url(server):
    """Grafana's "Save & test" of this plugin is GET <data source url> (here /api/v1)."""
    response = requests.get(server.api, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert response.status_code == 200
    assert requests.get(server.api, timeout=10).status_code == 401     # the header of the data source matters
