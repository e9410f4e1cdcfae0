"""The Kubernetes manifests under deploy/: schema-valid, and consistent with each other and with the project.

Schemas: every object is validated offline, strictly (unknown fields are errors), against the
Kubernetes OpenAPI schemas bundled in the ``kubernetes-validate`` package, for the oldest and the
newest Kubernetes release checked here. Files that are not Kubernetes objects (the kustomization,
the Prometheus adapter's Helm values) are checked for what their own readers expect.
"""

from __future__ import annotations

import re
import shlex
import string
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from lita_client.options import DEFAULT_URL
from lita_serve.cli import cmd_build, parser
from lita_serve.feature_cache import CACHE_ROOT_ENV
from lita_serve.serving.launcher import Ports
from lita_serve.adapters.layout import BUILD_MANIFEST

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
K8S = DEPLOY / "kubernetes"
KUSTOMIZATION = K8S / "kustomization.yaml"
ADAPTER_VALUES = K8S / "prometheus-adapter-values.yaml"
# Oldest release still commonly run (EKS/GKE extended support) and the newest the package bundles.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())

# The fields of one prometheus-adapter discovery rule: DiscoveryRule, ResourceMapping, NameMapping
# in kubernetes-sigs/prometheus-adapter pkg/config/config.go (commit 0536a5d, v0.12 line).
ADAPTER_RULE_KEYS = {"seriesQuery", "seriesFilters", "resources", "name", "metricsQuery", "labelValueReplacements"}
ADAPTER_RESOURCE_KEYS = {"template", "overrides"}
ADAPTER_NAME_KEYS = {"matches", "as"}
# Labels that Prometheus' annotation-driven pod job ("kubernetes-pods" in
# prometheus-community/helm-charts charts/prometheus/values.yaml, commit 005bec2) writes from
# __meta_kubernetes_namespace and __meta_kubernetes_pod_name, and the annotations it reads.
SCRAPE_LABELS = {"namespace": "namespace", "pod": "pod"}
SCRAPE_ANNOTATIONS = ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")


def manifest_files() -> list[Path]:
    """Every YAML file under deploy/ that holds Kubernetes objects."""
    return sorted(p for p in DEPLOY.rglob("*.y*ml") if p not in (KUSTOMIZATION, ADAPTER_VALUES))


def objects() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in manifest_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [doc for _, doc in objects() if doc["kind"] == kind and name in (None, doc["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(pod_spec: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    return next(c for c in pod_spec["initContainers" if init else "containers"] if c["name"] == name)


def mounts_by_path(c: dict[str, Any], pod_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """mountPath -> the pod volume mounted there."""
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    return {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}


def rendered_args(command: list[str], args: list[str], env: dict[str, str]) -> list[str]:
    """The argv a ``bash -c`` container runs, its ${VARS} filled from ``env``."""
    assert command == ["bash", "-c"] and len(args) == 1
    return shlex.split(string.Template(args[0]).substitute(env))


# --- schemas -------------------------------------------------------------------------------------

def test_every_yaml_file_is_known():
    assert len(manifest_files()) >= 7
    kinds = {doc["kind"] for _, doc in objects()}
    assert {"Deployment", "Service", "Job", "PersistentVolumeClaim", "ConfigMap", "PodDisruptionBudget",
            "HorizontalPodAutoscaler"} <= kinds


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schema(version):
    errors = []
    for path, doc in objects():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{path.name}: {doc['kind']} {doc['metadata']['name']}: {str(exc).splitlines()[0]}")
    assert not errors, "\n".join(errors)


def test_the_validator_rejects_a_broken_manifest():
    """The check above can fail: an unknown field and a wrong type are both reported."""
    deployment = one("Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError, match="gpus"):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = {(K8S / r).resolve() for r in kustomization["resources"]}
    assert listed == {p.resolve() for p in manifest_files()}
    images = {image["name"] for image in kustomization["images"]}
    used = {c["image"].split(":")[0] for _, doc in objects() if doc["kind"] in ("Deployment", "Job")
            for c in doc["spec"]["template"]["spec"].get("initContainers", []) + doc["spec"]["template"]["spec"]["containers"]}
    assert used == images


# --- the serving pods ------------------------------------------------------------------------------

def test_triton_pods_have_gpus_shm_probes_and_the_standard_ports():
    deployment = one("Deployment", "lita-triton")
    pod = deployment["spec"]["template"]["spec"]
    triton = container(pod, "triton")
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    default = Ports()
    assert ports == {"http": default.http, "grpc": default.grpc, "metrics": default.metrics}
    assert DEFAULT_URL.endswith(f":{ports['grpc']}")
    args = triton["args"]
    for name, port in ports.items():
        assert f"--{name}-port={port}" in args
    for probe, path in (("startupProbe", "/v2/health/ready"), ("readinessProbe", "/v2/health/ready"),
                        ("livenessProbe", "/v2/health/live")):
        assert triton[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    # Loading engines takes minutes: the startup probe allows 15 of them before liveness applies.
    assert triton["startupProbe"]["periodSeconds"] * triton["startupProbe"]["failureThreshold"] >= 600
    for key in ("limits", "requests"):
        assert int(triton["resources"][key]["nvidia.com/gpu"]) >= 1
    mounts = mounts_by_path(triton, pod)
    assert mounts["/dev/shm"]["emptyDir"]["medium"] == "Memory"
    assert mounts["/dev/shm"]["emptyDir"]["sizeLimit"] == "8Gi"
    env = {e["name"]: e["value"] for e in triton["env"]}
    assert env[CACHE_ROOT_ENV] in mounts  # the feature cache on a volume of its own
    # Triton drains in-flight requests on SIGTERM; Kubernetes waits longer than that before SIGKILL.
    drain = int(next(a for a in args if a.startswith("--exit-timeout-secs=")).split("=")[1])
    assert pod["terminationGracePeriodSeconds"] > drain


def test_scrape_annotations_point_at_the_metrics_port():
    template = one("Deployment", "lita-triton")["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    triton = container(template["spec"], "triton")
    metrics = next(p["containerPort"] for p in triton["ports"] if p["name"] == "metrics")
    assert [annotations[k] for k in SCRAPE_ANNOTATIONS] == ["true", str(metrics), "/metrics"]


def test_services_pdb_and_hpa_select_the_triton_pods():
    deployment = one("Deployment", "lita-triton")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    headless, regular = one("Service", "lita-triton-grpc"), one("Service", "lita-triton")
    for service in (headless, regular):
        assert service["spec"]["selector"].items() <= labels.items()
    # Headless: the DNS name gives every pod's address (what `--url dns:///...` resolves).
    assert headless["spec"]["clusterIP"] == "None"
    assert [(p["port"], p["targetPort"]) for p in headless["spec"]["ports"]] == [(Ports().grpc, "grpc")]
    assert {p["targetPort"] for p in regular["spec"]["ports"]} == {"http", "grpc", "metrics"}
    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    # Never fewer than two replicas, and a disruption never takes the last one.
    assert hpa["spec"]["minReplicas"] >= 2 and pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]


# --- the build Job ---------------------------------------------------------------------------------

def test_build_job_runs_lita_build_into_the_repository_the_pods_serve():
    job_pod = one("Job", "lita-build")["spec"]["template"]["spec"]
    build = container(job_pod, "build")
    env = one("ConfigMap", next(e["configMapRef"]["name"] for e in build["envFrom"]))["data"]
    argv = rendered_args(build["command"], build["args"], env)
    assert argv[:2] == ["lita", "build"]
    parsed = parser().parse_args(argv[1:])  # the real `lita build` command line accepts it
    assert parsed.func is cmd_build and parsed.engine == "tensorrt_llm"
    assert parsed.tp_size == int(build["resources"]["limits"]["nvidia.com/gpu"])
    output = parsed.output

    pod = one("Deployment", "lita-triton")["spec"]["template"]["spec"]
    triton = container(pod, "triton")
    repository = Path(next(a for a in triton["args"] if a.startswith("--model-repository=")).split("=", 1)[1])
    assert repository == output
    # Same claim at the same path in both: the TensorRT-LLM config names its engine by absolute path.
    job_mounts, pod_mounts = mounts_by_path(build, job_pod), mounts_by_path(triton, pod)
    mount = next(m for m in pod_mounts if output.is_relative_to(m))
    assert job_mounts[mount]["persistentVolumeClaim"]["claimName"] == \
        pod_mounts[mount]["persistentVolumeClaim"]["claimName"]
    assert pod_mounts[mount]["persistentVolumeClaim"]["readOnly"] is True
    assert "readOnly" not in job_mounts[mount]["persistentVolumeClaim"]
    for path in ("/dev/shm",):
        assert job_mounts[path]["emptyDir"]["medium"] == "Memory"
    # The pods start Triton only once the build wrote its last file.
    wait = container(pod, "wait-for-build", init=True)
    assert f"-f {output / BUILD_MANIFEST} ]" in wait["args"][0]
    assert mounts_by_path(wait, pod)[mount] == pod_mounts[mount]


# --- the autoscaler and the adapter rules that feed it ------------------------------------------

def adapter_rules() -> list[dict[str, Any]]:
    return yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]


def series_name(rule: dict[str, Any]) -> str:
    match = re.fullmatch(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{(.*)\}\s*", rule["seriesQuery"])
    assert match, rule["seriesQuery"]
    return match.group(1)


def api_name(rule: dict[str, Any]) -> str:
    """The custom-metrics API name the adapter publishes for ``rule``: NameMapping's ``as`` with the
    captures of ``matches`` on the series name (``$1``, ``${1}``); without ``as``, the one capture
    or the whole match."""
    name = series_name(rule)
    match = re.search(rule["name"]["matches"] or ".*", name)
    assert match, f"{rule['name']['matches']} does not match {name}"
    as_ = rule["name"].get("as") or ""
    if not as_:
        return match.group(1) if match.re.groups == 1 else match.group(0)
    return re.sub(r"\$\{?(\d+)\}?", lambda ref: match.group(int(ref.group(1))), as_)


def test_adapter_rules_have_the_adapters_fields_and_map_pods():
    for rule in adapter_rules():
        assert set(rule) <= ADAPTER_RULE_KEYS and {"seriesQuery", "resources", "name", "metricsQuery"} <= set(rule)
        assert set(rule["resources"]) <= ADAPTER_RESOURCE_KEYS and set(rule["name"]) <= ADAPTER_NAME_KEYS
        overrides = rule["resources"]["overrides"]
        assert {label: target["resource"] for label, target in overrides.items()} == SCRAPE_LABELS
        for label in SCRAPE_LABELS:
            assert f'{label}!=""' in rule["seriesQuery"]
        for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            assert placeholder in rule["metricsQuery"], placeholder


def test_hpa_metrics_are_exactly_what_the_adapter_rules_publish():
    hpa = one("HorizontalPodAutoscaler")
    asked = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]]
    assert all(m["type"] == "Pods" for m in hpa["spec"]["metrics"])
    published = [api_name(rule) for rule in adapter_rules()]
    assert sorted(asked) == sorted(published) and len(set(published)) == len(published)


@pytest.mark.server
def test_the_series_the_rules_read_are_exported_by_tritonserver(triton_server):
    """Each rule's series exists, with a ``model="lita"`` sample, on the real tritonserver 2.51."""
    url = f"http://{triton_server.host}:{triton_server.ports.metrics}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    for rule in adapter_rules():
        name = series_name(rule)
        assert re.search(rf'^{name}\{{[^}}]*model="lita"', text, re.M), f"{name} not in tritonserver's metrics"
