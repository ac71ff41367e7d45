"""deploy/: the Kubernetes manifests, the server image and how they fit the user guide.

Docker and a cluster cannot run here.  The manifests are validated against the
Kubernetes OpenAPI schemas (``kubernetes-validate``, offline) when it is installed and
always against the minimal schemas below; the cross-references that a schema cannot see
(Service -> Deployment labels and named port, Secret names and keys, the guide's default
URL, probe paths, the server's real command-line options) are checked explicitly.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import jsonschema

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
GUIDE_DEFAULT_URL = "http://primus-lens-telemetry-processor:8080/api/v1"
NAME = "primus-lens-telemetry-processor"
MANIFESTS = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_docs() -> list:
    return [(p, d) for p in MANIFESTS for d in docs(p)]


def find(kind: str, name: str) -> dict:
    matches = [d for _, d in all_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def container(workload: dict) -> dict:
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c: dict) -> dict:
    return {e["name"]: e for e in c.get("env", [])}


# ---- schemas --------------------------------------------------------------------------------

_META = {"type": "object", "required": ["name"], "properties": {
    "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}}}}
_ENV = {"type": "array", "items": {"type": "object", "required": ["name"], "additionalProperties": False,
        "properties": {"name": {"type": "string"}, "value": {"type": "string"}, "valueFrom": {
            "type": "object", "minProperties": 1, "maxProperties": 1, "properties": {
                "secretKeyRef": {"type": "object", "required": ["name", "key"]},
                "fieldRef": {"type": "object", "required": ["fieldPath"]}}, "additionalProperties": False}}}}
_PROBE = {"type": "object", "properties": {"httpGet": {"type": "object", "required": ["path", "port"]},
                                           "exec": {"type": "object", "required": ["command"]}}}
_CONTAINER = {"type": "object", "required": ["name", "image"], "properties": {
    "name": {"type": "string"}, "image": {"type": "string"},
    "command": {"type": "array", "items": {"type": "string"}}, "args": {"type": "array", "items": {"type": "string"}},
    "env": _ENV, "ports": {"type": "array", "items": {"type": "object", "required": ["containerPort"], "properties": {
        "containerPort": {"type": "integer", "minimum": 1, "maximum": 65535},
        "name": {"type": "string", "maxLength": 15}}}},
    "readinessProbe": _PROBE, "livenessProbe": _PROBE, "startupProbe": _PROBE}}
_POD_TEMPLATE = {"type": "object", "required": ["spec"], "properties": {"spec": {
    "type": "object", "required": ["containers"],
    "properties": {"containers": {"type": "array", "minItems": 1, "items": _CONTAINER}}}}}
MINIMAL = {
    ("apps/v1", "Deployment"): {"required": ["spec"], "properties": {"spec": {
        "type": "object", "required": ["selector", "template"], "properties": {
            "replicas": {"type": "integer", "minimum": 0}, "template": _POD_TEMPLATE}}}},
    ("apps/v1", "StatefulSet"): {"required": ["spec"], "properties": {"spec": {
        "type": "object", "required": ["selector", "template", "serviceName"], "properties": {"template": _POD_TEMPLATE}}}},
    ("v1", "Service"): {"required": ["spec"], "properties": {"spec": {
        "type": "object", "required": ["ports"], "properties": {"ports": {"type": "array", "items": {
            "type": "object", "required": ["port"], "properties": {"port": {"type": "integer"}}}}}}}},
    ("v1", "Secret"): {"properties": {"stringData": {"type": "object", "additionalProperties": {"type": "string"}}}},
    ("batch/v1", "Job"): {"required": ["spec"], "properties": {"spec": {
        "type": "object", "required": ["template"], "properties": {"template": _POD_TEMPLATE}}}},
    ("policy/v1", "PodDisruptionBudget"): {"required": ["spec"], "properties": {"spec": {
        "type": "object", "required": ["selector"], "minProperties": 2, "maxProperties": 2,
        "properties": {"minAvailable": {}, "maxUnavailable": {}, "selector": {"type": "object"}}}}},
}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_matches_the_minimal_schema_of_its_kind(path):
    for doc in docs(path):
        schema = MINIMAL.get((doc["apiVersion"], doc["kind"]))
        assert schema, f"{path.name}: no schema for {doc['apiVersion']} {doc['kind']}"
        jsonschema.validate(doc, {"type": "object", "required": ["apiVersion", "kind", "metadata"],
                                  "properties": {"metadata": _META}, **schema})


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_is_valid_against_the_kubernetes_openapi_schema(path):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (offline k8s schemas)")
    for version in ("1.28.0", kv.latest_version()):
        for doc in docs(path):
            kv.validate(doc, version, strict=True)


def test_kustomization_lists_existing_files():
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert k["kind"] == "Kustomization"
    for resource in k["resources"]:
        assert (K8S / resource).is_file(), resource
    assert "secrets.example.yaml" not in k["resources"]      # real secrets are created by the operator


# ---- how the pieces fit ---------------------------------------------------------------------

def test_service_makes_the_guides_default_url_resolve():
    url = urlparse(GUIDE_DEFAULT_URL)
    service = find("Service", url.hostname)
    (port,) = service["spec"]["ports"]
    assert port["port"] == url.port == 8080
    deployment = find("Deployment", NAME)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    named = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
    assert named[port["targetPort"]] == 8080
    # `kubectl logs -l app=primus-lens-telemetry-processor` from the guide finds the pods.
    assert pod_labels["app"] == NAME


def test_liveness_and_readiness_are_separate_probes_on_the_http_port():
    # Liveness must not touch the database (a PostgreSQL restart would restart every
    # Lens pod); readiness follows the database.
    c = container(find("Deployment", NAME))
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    # The startup probe outlasts serve's --db-wait, so a slow PostgreSQL is waited for, not a crash loop.
    args = c["args"]
    wait = float(args[args.index("--db-wait") + 1])
    s = c["startupProbe"]
    assert s["periodSeconds"] * s["failureThreshold"] > wait


def test_the_probe_paths_exist_in_the_real_server():
    pytest.importorskip("fastapi")
    from primus_lens_wandb_exporter.server.app import create_app
    from primus_lens_wandb_exporter.server.settings import Settings

    app = create_app(Settings(db_url="sqlite:///:memory:"))
    paths = {getattr(r, "path", None) for r in app.routes}
    c = container(find("Deployment", NAME))
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["path"] in paths, probe


def test_disruption_budget_keeps_a_server_of_the_deployment_up():
    dep = find("Deployment", NAME)
    pdb = find("PodDisruptionBudget", NAME)
    sel = pdb["spec"]["selector"]["matchLabels"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert sel.items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] == 1 and dep["spec"]["replicas"] >= 2   # a drain can still proceed


def _secret_keys() -> dict:
    return {d["metadata"]["name"]: set(d["stringData"]) for _, d in all_docs() if d["kind"] == "Secret"}


def test_database_and_token_come_from_secrets_that_the_example_defines():
    secrets = _secret_keys()
    for workload in (find("Deployment", NAME), find("StatefulSet", "primus-lens-postgres"),
                     find("Job", "my-training-job")):
        for e in env_of(container(workload)).values():
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets[ref["name"]], ref
    env = env_of(container(find("Deployment", NAME)))
    assert env["PRIMUS_LENS_DB"]["valueFrom"]["secretKeyRef"] == {"name": "primus-lens-db", "key": "dsn"}
    assert not any("value" in e and re.search(r"postgres(ql)?://", e["value"]) for e in env.values())


def test_each_token_role_comes_from_its_secret_with_room_for_a_rotation():
    # docs/server.md "Access control": the server accepts each Secret's `token` and, during a
    # rotation, its `previous`; with `previous` empty (the example) exactly one token per role.
    env = env_of(container(find("Deployment", NAME)))
    secrets = {d["metadata"]["name"]: d["stringData"] for _, d in all_docs() if d["kind"] == "Secret"}
    from primus_lens_wandb_exporter.server.auth import parse_tokens

    for var, secret in (("PRIMUS_LENS_API_TOKEN", "primus-lens-api-token"),
                        ("PRIMUS_LENS_INGEST_TOKEN", "primus-lens-ingest-token"),
                        ("PRIMUS_LENS_READ_TOKEN", "primus-lens-read-token")):
        refs = re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", env[var]["value"])
        keys = [env[r]["valueFrom"]["secretKeyRef"] for r in refs]
        assert keys == [{"name": secret, "key": "token"}, {"name": secret, "key": "previous"}], var
        names = list(env)
        assert all(names.index(r) < names.index(var) for r in refs)   # k8s expands only earlier variables
        values = {r: secrets[k["name"]][k["key"]] for r, k in zip(refs, keys)}
        assert parse_tokens(_expand([env[var]["value"]], values)[0]) == (secrets[secret]["token"],)
        rotating = {refs[0]: "new-token", refs[1]: "old-token"}
        assert parse_tokens(_expand([env[var]["value"]], rotating)[0]) == ("new-token", "old-token")


def _server_parser() -> argparse.ArgumentParser:
    if importlib.util.find_spec("primus_lens_wandb_exporter.server.cli") is None:
        pytest.skip("the server CLI is not there yet")
    from primus_lens_wandb_exporter.server.cli import add_arguments

    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    return parser


def _expand(args: list, env: dict) -> list:
    """Kubernetes' $(VAR) expansion in command/args."""
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in args]


def test_deployment_command_is_accepted_by_the_real_server_cli():
    c = container(find("Deployment", NAME))
    assert c["command"] == ["primus-lens"] and c["args"][0] == "serve"
    env = {name: "postgresql://lens:pw@primus-lens-postgres:5432/lens" for name in env_of(c)}
    args = _server_parser().parse_args(_expand(c["args"][1:], env))
    assert (args.host, args.port) == ("0.0.0.0", 8080)
    assert args.db.startswith("postgresql://")            # $(PRIMUS_LENS_DB) was defined in env
    # Binding 0.0.0.0 needs a token: the admin, ingest and read tokens come from Secrets.
    assert {"PRIMUS_LENS_API_TOKEN", "PRIMUS_LENS_INGEST_TOKEN", "PRIMUS_LENS_READ_TOKEN"} <= set(env_of(c))


def test_deployment_answers_the_service_name_as_host():
    # The server refuses Host names it was not given (DNS-rebinding defence): the names training
    # pods and Grafana use, the Service's, must be passed, with the namespace from the downward API.
    c = container(find("Deployment", NAME))
    env = env_of(c)
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    values = {n: "postgresql://lens:pw@db/lens" for n in env}
    values["POD_NAMESPACE"] = "ml"
    args = _server_parser().parse_args(_expand(c["args"][1:], values))
    service = find("Service", NAME)["metadata"]["name"]
    assert urlparse(GUIDE_DEFAULT_URL).hostname == service
    assert {service, f"{service}.ml", f"{service}.ml.svc", f"{service}.ml.svc.cluster.local"} <= set(args.allowed_host)


def test_training_job_is_the_guides_wired_to_the_server():
    job = find("Job", "my-training-job")
    c = container(job)
    env = env_of(c)
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["WORKLOAD_UID"]["value"] == "my-training-workload-12345"
    assert env["PRIMUS_LENS_API_BASE_URL"]["value"] == GUIDE_DEFAULT_URL
    # A training pod holds the ingest token only: it can report, not list, read or delete.
    assert env["PRIMUS_LENS_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "primus-lens-ingest-token",
                                                                         "key": "token"}
    for toggle in ("PRIMUS_LENS_WANDB_HOOK", "PRIMUS_LENS_WANDB_API_REPORTING"):
        assert env[toggle]["value"] == "true"
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    # The spool lives on a volume mounted where PRIMUS_LENS_SPOOL_DIR points.
    spool = env["PRIMUS_LENS_SPOOL_DIR"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    assert spool in mounts
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert set(volumes[mounts[spool]]) & {"emptyDir", "persistentVolumeClaim"}


# ---- the image ------------------------------------------------------------------------------

def dockerfile_instructions() -> list:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_builds_from_files_that_exist_and_installs_the_server_extra():
    ins = dockerfile_instructions()
    assert [w for w, _ in ins].count("FROM") == 3                  # uPlot (npm) + wheel build + runtime
    for word, rest in ins:
        if word == "COPY" and not rest.startswith("--from"):
            *sources, _dest = shlex.split(rest)
            for s in sources:
                assert (ROOT / s).exists(), f"COPY {s}: not in the repository"
    assert any(w == "RUN" and "[server]" in r for w, r in ins)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not any(d.startswith("plotly") for d in extras["server"])   # the UI draws with uPlot (npm)
    # uPlot: `npm ci` from the committed lock file in a node stage, its node_modules handed to
    # the wheel build, where hatch_build.py puts the files into the wheel.
    assert any(w == "RUN" and r.startswith("npm ci") for w, r in ins)
    copies = [r.split() for w, r in ins if w == "COPY" and r.startswith("--from=ui")]
    assert copies and copies[0][1:] == ["/src/node_modules", "./node_modules"]
    assert ins.index(("COPY", " ".join(copies[0]))) < ins.index(next(i for i in ins if i[0] == "RUN" and "build --wheel" in i[1]))


def test_dockerfile_runs_the_server_as_non_root_on_8080_with_a_health_check():
    ins = dict((w, r) for w, r in dockerfile_instructions())   # last of each instruction
    assert ins["EXPOSE"] == "8080"
    assert ins["USER"].split(":")[0] not in ("root", "0")
    assert "/health" in ins["HEALTHCHECK"]
    import json

    command = json.loads(ins["ENTRYPOINT"]) + json.loads(ins["CMD"])
    assert command[:2] == ["primus-lens", "serve"]
    args = _server_parser().parse_args(command[2:])
    assert (args.host, args.port) == ("0.0.0.0", 8080)
    env_line = next(r for w, r in dockerfile_instructions() if w == "ENV" and "PRIMUS_LENS_DB=" in r)
    assert "PRIMUS_LENS_DB=sqlite:////data/lens.db" in env_line
    assert "PRIMUS_LENS_UI_PLOTLY_JS" not in env_line          # gone: uPlot ships inside the wheel


def test_servicemonitor_scrapes_metrics_on_the_services_named_port():
    (sm,) = docs(ROOT / "deploy" / "prometheus" / "servicemonitor.yaml")
    assert (sm["apiVersion"], sm["kind"]) == ("monitoring.coreos.com/v1", "ServiceMonitor")
    svc = find("Service", NAME)
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    (ep,) = sm["spec"]["endpoints"]
    assert ep["path"] == "/metrics"
    assert ep["port"] in {p.get("name") for p in svc["spec"]["ports"]}
