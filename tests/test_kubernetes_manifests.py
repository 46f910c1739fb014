"""deploy/kubernetes/: the DaemonSet for containerd nodes, its ServiceMonitor and scrape example.

No cluster runs here, so the manifests are checked offline, each by a real validator:

- the core documents (ServiceAccount, Service, DaemonSet) against Kubernetes' OpenAPI
  schemas as kubernetes-validate bundles them, strict (an unknown field is an error), and
  through the official `kubernetes` client's models, whose round trip must give the input
  back (a misspelt field would be dropped, so it fails);
- the ServiceMonitor through cloudcoil's prometheus-operator models, which are generated
  from the operator's CRD schema (v0.80.1): unknown fields forbidden, enums and types as the
  CRD has them. It is that schema as code, not the CRD document itself, which no PyPI
  package ships;
- the scrape example through promtool. Debian's Prometheus is built without Kubernetes
  discovery, so promtool refuses `kubernetes_sd_configs` itself; the test checks that this
  is the only thing it refuses, and checks the rest (the relabelling) with the discovery
  block put in place by a static one. The discovery block's own fields (role, namespaces,
  selectors) are not checked by any tool here.

Then what the manifests promise: the socket read-only and the argument naming it, no
privilege, probes on paths the exporter serves, the state file on a hostPath, selectors
that match, labels that keep alerts' identity across pod restarts.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor
from kubernetes import client

from exporter import config
from tests.services import ROOT, need

K8S = ROOT / "deploy" / "kubernetes"
NAMESPACE = "monitoring"
NAME = "docker-hygiene-exporter"
# The newest schemas kubernetes-validate has, and an older release still in wide use.
K8S_VERSIONS = (kubernetes_validate.utils.latest_version(), "1.29")
MODELS = {"ServiceAccount": "V1ServiceAccount", "Service": "V1Service",
          "DaemonSet": "V1DaemonSet"}
SERVER = (ROOT / "exporter" / "web" / "server.py").read_text()
ALERT_JOB = re.compile(r".*docker-hygiene.*")  # the shipped rules' job matcher


def load(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]


@pytest.fixture(scope="module")
def docs() -> dict[str, dict[str, Any]]:
    documents = load("daemonset.yaml")
    by_kind = {d["kind"]: d for d in documents}
    assert len(by_kind) == len(documents), "one document of each kind"
    return by_kind


@pytest.fixture(scope="module")
def pod(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return docs["DaemonSet"]["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def exporter(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod["containers"]
    return container


def strict_errors(doc: dict[str, Any], version: str) -> str | None:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return f"{'.'.join(map(str, e.path))}: {e.message}"
    return None


def round_trip(doc: dict[str, Any]) -> Any:
    api = client.ApiClient()
    model = api.deserialize(json.dumps(doc), MODELS[doc["kind"]], "application/json")
    return api.sanitize_for_serialization(model)


def test_the_documents_are_what_the_deployment_needs(docs: dict[str, dict[str, Any]]) -> None:
    assert set(docs) == set(MODELS), "no Namespace: it is not this manifest's to create"
    for doc in docs.values():
        assert doc["metadata"]["namespace"] == NAMESPACE and doc["metadata"]["name"] == NAME


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_documents_validate_against_the_kubernetes_schemas(
        docs: dict[str, dict[str, Any]], version: str) -> None:
    for kind, doc in docs.items():
        assert strict_errors(doc, version) is None, (kind, strict_errors(doc, version))


def test_core_documents_round_trip_through_the_kubernetes_client(
        docs: dict[str, dict[str, Any]]) -> None:
    for kind, doc in docs.items():
        assert round_trip(doc) == doc, kind


def test_the_validators_catch_a_misspelt_field(docs: dict[str, dict[str, Any]]) -> None:
    """Both validators above have teeth: a field spelt wrong fails each."""
    bad = copy.deepcopy(docs["DaemonSet"])
    mount = bad["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]
    mount["readonly"] = mount.pop("readOnly")
    assert strict_errors(bad, K8S_VERSIONS[0]) is not None
    assert round_trip(bad) != bad


def test_service_monitor_validates_against_the_operator_crd_models() -> None:
    (doc,) = load("servicemonitor.yaml")
    model = ServiceMonitor.model_validate(doc, extra="forbid")
    assert model.model_dump(mode="json", by_alias=True, exclude_unset=True) == doc
    bad = copy.deepcopy(doc)
    bad["spec"]["endpoints"][0]["relabelings"][0]["targetLable"] = "node"
    with pytest.raises(ValueError, match="targetLable"):
        ServiceMonitor.model_validate(bad, extra="forbid")


def test_the_exporter_runs_without_privilege(pod: dict[str, Any],
                                             exporter: dict[str, Any]) -> None:
    assert pod["hostNetwork"] is False and not pod.get("hostPID") and not pod.get("hostIPC")
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # Not UID 0: group 0 opens containerd's root:root 0660 socket.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert 0 in pod["securityContext"]["supplementalGroups"]
    sc = exporter["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    # The init container is root only to chown the state directory: CHOWN, nothing else.
    (init,) = pod["initContainers"]
    isc = init["securityContext"]
    assert isc["privileged"] is False and isc["allowPrivilegeEscalation"] is False
    assert isc["readOnlyRootFilesystem"] is True
    assert isc["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert [m["mountPath"] for m in init["volumeMounts"]] == ["/var/lib/docker-hygiene-exporter"]
    assert init["image"] == exporter["image"]


def test_the_socket_is_mounted_read_only_and_named_by_the_argument(
        pod: dict[str, Any], exporter: dict[str, Any]) -> None:
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in exporter["volumeMounts"]}
    assert set(mounts) == set(volumes) == {"cri-socket", "containerd-root", "state"}
    endpoints = [a.split("=", 1)[1] for a in exporter["args"]
                 if a.startswith("--cri.endpoint=")]
    assert len(endpoints) == 1, exporter["args"]
    socket = mounts["cri-socket"]
    assert endpoints[0] == "unix://" + socket["mountPath"]
    assert socket["readOnly"] is True
    assert volumes["cri-socket"]["hostPath"] == {"path": socket["mountPath"], "type": "Socket"}
    # ImageFsInfo names a path on the node: containerd's root is at the same path, read-only.
    root = mounts["containerd-root"]
    assert root["readOnly"] is True
    assert volumes["containerd-root"]["hostPath"] == {"path": root["mountPath"],
                                                      "type": "Directory"}
    assert root["mountPath"] == "/var/lib/containerd"
    # Nothing else of the node is writable but the state directory.
    assert [m for m in mounts.values() if not m.get("readOnly")] == [mounts["state"]]


def test_the_state_file_is_on_a_host_path_that_outlives_the_pod(
        pod: dict[str, Any], exporter: dict[str, Any]) -> None:
    (setting,) = [s for s in config.SETTINGS if s.key == "state.path"]
    env = {e["name"]: e["value"] for e in exporter["env"]}
    state_mount = {m["name"]: m for m in exporter["volumeMounts"]}["state"]
    assert Path(env[setting.env]).parent == Path(state_mount["mountPath"])
    volume = {v["name"]: v for v in pod["volumes"]}["state"]
    assert volume["hostPath"]["type"] == "DirectoryOrCreate"
    # The Dockerfile keeps the state at the same path.
    assert f"{setting.env}={env[setting.env]}" in (ROOT / "Dockerfile").read_text()


def test_resources_probes_ports_and_tolerations(pod: dict[str, Any],
                                                exporter: dict[str, Any]) -> None:
    # BENCHMARKS.md section 8: 64 MB of RSS on an empty node, 73 MB with 1,006 images.
    assert exporter["resources"]["requests"] == {"cpu": "20m", "memory": "80Mi"}
    assert exporter["resources"]["limits"]["memory"] == "128Mi"
    (port,) = exporter["ports"]
    assert port == {"name": "metrics", "containerPort": config.DEFAULT_PORT, "protocol": "TCP"}
    assert config.Config.__dataclass_fields__["web_listen_address"].default == (
        f":{config.DEFAULT_PORT}")
    probes = {"readinessProbe": "/-/ready", "livenessProbe": "/-/healthy"}
    for probe, path in probes.items():
        assert exporter[probe]["httpGet"] == {"path": path, "port": "metrics"}
        assert f'path == "{path}"' in SERVER, f"exporter/web/server.py serves no {path}"
    assert pod["tolerations"] == [{"operator": "Exists"}]


def test_selectors_match_from_service_monitor_to_pod(docs: dict[str, dict[str, Any]],
                                                     exporter: dict[str, Any]) -> None:
    ds, service = docs["DaemonSet"], docs["Service"]
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["clusterIP"] == "None"
    (sport,) = service["spec"]["ports"]
    assert sport["targetPort"] == exporter["ports"][0]["name"]
    assert sport["port"] == config.DEFAULT_PORT
    (monitor,) = load("servicemonitor.yaml")
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items())
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == sport["name"]
    assert endpoint["path"] == "/metrics"
    # The operator names the job after the Service: the alert rules must select it.
    assert ALERT_JOB.fullmatch(service["metadata"]["name"])


# Prometheus's relabelling, enough of it to run the rules these files use: replace (the
# default), keep and labeldrop, with anchored regexes and ";" joining source labels. Not
# Prometheus itself (promtool only checks the rules' syntax), so the semantics are restated.
def relabel(labels: dict[str, str], rules: list[dict[str, Any]]) -> dict[str, str] | None:
    labels = dict(labels)
    for rule in rules:
        action = rule.get("action", "replace").lower()
        regex = re.compile(f"^(?:{rule.get('regex', '(.*)')})$")
        value = rule.get("separator", ";").join(labels.get(s, "") for s in rule.get(
            "source_labels", rule.get("sourceLabels", [])))
        if action == "keep":
            if not regex.match(value):
                return None
        elif action == "labeldrop":
            labels = {k: v for k, v in labels.items() if not regex.match(k)}
        elif action == "replace":
            if m := regex.match(value):
                target = rule.get("target_label", rule.get("targetLabel"))
                labels[target] = m.expand(rule.get("replacement", r"\1").replace("$1", r"\1"))
        else:
            raise AssertionError(f"no semantics written down here for {action}")
    return labels


def discovered(node: str, kind: str = "DaemonSet", name: str = NAME,
               port: str = "metrics") -> dict[str, str]:
    """A pod target as Kubernetes service discovery labels it, with the operator's labels."""
    return {"__address__": "10.1.2.3:10221", "__meta_kubernetes_pod_node_name": node,
            "__meta_kubernetes_pod_controller_kind": kind,
            "__meta_kubernetes_pod_controller_name": name,
            "__meta_kubernetes_pod_container_port_name": port,
            "instance": "10.1.2.3:10221", "container": "exporter", "pod": f"{NAME}-x7k2p",
            "namespace": NAMESPACE, "service": NAME, "endpoint": "metrics"}


def test_service_monitor_labels_targets_by_node() -> None:
    (monitor,) = load("servicemonitor.yaml")
    rules = monitor["spec"]["endpoints"][0]["relabelings"]
    out = relabel(discovered("node-a"), rules)
    assert out is not None
    visible = {k: v for k, v in out.items() if not k.startswith("__")}
    # instance and node are the node; nothing left that a restart changes or that collides
    # with the exporter's own labels (container).
    assert visible == {"instance": "node-a", "node": "node-a"}


@pytest.fixture(scope="module")
def scrape() -> dict[str, Any]:
    return yaml.safe_load((K8S / "prometheus-scrape.yml").read_text())


def test_scrape_example_keeps_only_the_daemonset_and_labels_by_node(
        scrape: dict[str, Any]) -> None:
    (job,) = scrape["scrape_configs"]
    assert ALERT_JOB.fullmatch(job["job_name"])
    (sd,) = job["kubernetes_sd_configs"]
    assert sd["role"] == "pod" and sd["namespaces"] == {"names": [NAMESPACE]}
    rules = job["relabel_configs"]
    out = relabel(discovered("node-b"), rules)
    assert out is not None and out["node"] == "node-b" and out["instance"] == "node-b"
    for other in (discovered("node-b", kind="ReplicaSet"),
                  discovered("node-b", name="node-exporter"),
                  discovered("node-b", port="http")):
        assert relabel(other, rules) is None


def promtool_check(tmp_path: Path, cfg: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return subprocess.run([need("promtool"), "check", "config", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_scrape_example(tmp_path: Path, scrape: dict[str, Any]) -> None:
    base = {"global": {"scrape_interval": "30s"}, "scrape_configs": scrape["scrape_configs"]}
    whole = promtool_check(tmp_path, base)
    out = whole.stdout + whole.stderr
    if whole.returncode != 0:
        # Debian's promtool has no Kubernetes discovery: that, and only that, is refused.
        errors = [line.strip() for line in out.splitlines() if "not found in type" in line]
        assert errors and all("field kubernetes_sd_configs not found in type "
                              "config.ScrapeConfig" in e for e in errors), out
        assert "FAILED: parsing YAML file" in out and out.count("line ") == len(errors), out
    # Everything but the discovery block, with a static target in its place.
    static = copy.deepcopy(base)
    for job in static["scrape_configs"]:
        del job["kubernetes_sd_configs"]
        job["static_configs"] = [{"targets": ["10.1.2.3:10221"]}]
    proc = promtool_check(tmp_path, static)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_exporter_accepts_the_manifests_arguments_and_environment(
        exporter: dict[str, Any], tmp_path: Path) -> None:
    """`check-config` with the container's args and env: the settings it names exist and
    their values are valid (a typo in a flag or a variable would fail here)."""
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_HYGIENE_")}
    env.update({e["name"]: e["value"] for e in exporter.get("env", [])})
    empty = tmp_path / "empty.yml"
    empty.write_text("{}\n")
    done = subprocess.run([sys.executable, "-m", "exporter", "check-config", str(empty),
                           *exporter["args"]], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    cfg = config.build({}, environ={e["name"]: e["value"] for e in exporter.get("env", [])})
    assert cfg.state_path == "/var/lib/docker-hygiene-exporter/state.db"
