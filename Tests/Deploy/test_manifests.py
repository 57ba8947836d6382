"""Kubernetes manifests, the compose stack and every shipped Tailgate configuration.

- every YAML file under deploy/ parses (PyYAML) and passes yamllint's syntax rules;
- the Kubernetes manifests validate against the Kubernetes 1.37 OpenAPI schemas bundled in kubernetes-validate
  (offline, --strict: unknown fields are errors), and hang together: Service selectors match pod labels, Service
  targetPorts are container ports, probe paths are the ones Tailgate serves, the grace period exceeds
  shutdown_timeout, the loadbalancing exporter routes by traceID to the headless Service;
- the compose file references files that exist, services that exist, and the Dockerfile;
- each shipped Tailgate configuration (image default, compose, systemd, Kubernetes ConfigMap) is loaded by the real
  `tailgate serve` (listen addresses and downstream overridden to loopback) and reaches /readyz;
- the compose stack's Prometheus configuration passes `promtool check config` with the alert rules.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deploylib import DEPLOY, REPO, Tailgate, promtool, tail, tool

K8S = DEPLOY / "kubernetes"
TAILGATE_PATHS = {"/livez", "/readyz", "/metrics", "/version"}


def size_bytes(text: str) -> int:
    """Bytes of a size written 8GiB or 10Gi."""
    import re
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|KiB|MiB|GiB)?", str(text))
    assert m, text
    unit = (m.group(2) or "").rstrip("B")
    return int(m.group(1)) * {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}[unit]


def duration_s(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text))


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def k8s_docs() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def by_kind(kind: str) -> list[dict]:
    return [d for d in k8s_docs() if d["kind"] == kind]


def test_every_yaml_file_parses_and_lints():
    files = yaml_files()
    assert len(files) >= 15
    for path in files:
        list(yaml.safe_load_all(path.read_text()))
    yamllint = tool("yamllint", False, "pip install yamllint")
    config = "{extends: relaxed, rules: {line-length: {max: 160}, truthy: disable}}"
    result = subprocess.run([yamllint, "-f", "parsable", "-d", config, *map(str, files)],
                            capture_output=True, text=True, timeout=120)
    errors = [line for line in result.stdout.splitlines() if "[error]" in line]
    assert not errors, "\n".join(errors)


def test_kubernetes_manifests_validate_against_the_bundled_schemas(tmp_path):
    validate = tool("kubernetes-validate", False, "pip install kubernetes-validate (bundles the schemas)")
    files = [str(p) for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"]
    result = subprocess.run([validate, "--strict", "--kubernetes-version", "1.37.0", *files],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") + result.stderr.count("passed") == len(k8s_docs())
    # The validator does reject a wrong manifest (so a pass above means something).
    broken = tmp_path / "broken.yaml"
    doc = by_kind("Deployment")[0]
    doc["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "four-three-one-seven"
    doc["spec"]["replica"] = 3
    broken.write_text(yaml.safe_dump(doc))
    bad = subprocess.run([validate, "--strict", str(broken)], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0


def test_kustomization_lists_every_manifest():
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == present


def test_kubernetes_objects_fit_together():
    for doc in k8s_docs():
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]
    deployments = {d["metadata"]["name"]: d for d in by_kind("Deployment")}
    services = {s["metadata"]["name"]: s for s in by_kind("Service")}
    configmaps = {c["metadata"]["name"]: c for c in by_kind("ConfigMap")}

    for service in services.values():
        matching = [d for d in deployments.values()
                    if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matching) == 1, service["metadata"]["name"]
        container = matching[0]["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports and ports[port["targetPort"]] == port["port"], port

    for deployment in deployments.values():
        spec = deployment["spec"]
        assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
        for volume in spec["template"]["spec"].get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps
            else:
                assert "emptyDir" in volume, volume
        mounted = {m["name"] for c in spec["template"]["spec"]["containers"] for m in c.get("volumeMounts", [])}
        assert mounted <= {v["name"] for v in spec["template"]["spec"].get("volumes", [])}

    tailgate = deployments["tailgate"]["spec"]["template"]["spec"]
    container = tailgate["containers"][0]
    assert container["args"][:3] == ["serve", "--config", "/etc/tailgate/tailgate.yaml"]
    admin = next(p for p in container["ports"] if p["name"] == "admin")
    assert admin["containerPort"] == 9464
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] in TAILGATE_PATHS
        assert container[probe]["httpGet"]["port"] in ("admin", 9464)
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]
    assert tailgate["securityContext"]["runAsNonRoot"] is True

    config = yaml.safe_load(configmaps["tailgate-config"]["data"]["tailgate.yaml"])
    assert config["admin_listen"] == "0.0.0.0:9464" and config["grpc_listen"] == "0.0.0.0:4317"
    # The durable store lives on a writable volume (the root file system is read-only), within its size limit.
    store_mount = next(m for m in container["volumeMounts"] if config["data_dir"].startswith(m["mountPath"] + "/"))
    assert not store_mount.get("readOnly", False)
    store_volume = next(v for v in tailgate["volumes"] if v["name"] == store_mount["name"])
    assert size_bytes(config["store"]["max_disk_bytes"]) < size_bytes(store_volume["emptyDir"]["sizeLimit"])
    assert tailgate["terminationGracePeriodSeconds"] > duration_s(config["shutdown_timeout"]) == 25

    headless = services["tailgate-headless"]
    assert headless["spec"]["clusterIP"] == "None"
    collector = yaml.safe_load(configmaps["otel-collector-config"]["data"]["config.yaml"])
    lb = collector["exporters"]["loadbalancing"]
    assert lb["routing_key"] == "traceID"
    hostname = lb["resolver"]["dns"]["hostname"]
    assert hostname == f'{headless["metadata"]["name"]}.{headless["metadata"]["namespace"]}.svc.cluster.local'
    assert int(lb["resolver"]["dns"]["port"]) == 4317
    pipeline = collector["service"]["pipelines"]["traces"]
    assert pipeline["exporters"] == ["loadbalancing"]
    for kind in ("receivers", "processors", "exporters"):
        assert set(pipeline[kind]) <= set(collector[kind])
    assert set(collector["service"]["extensions"]) <= set(collector["extensions"])
    otel = deployments["otel-collector"]["spec"]["template"]["spec"]["containers"][0]
    assert "contrib" in otel["image"] and not otel["image"].endswith(":latest")  # loadbalancing is in contrib


def test_compose_stack_hangs_together():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert {"agents", "tailgate", "otel-collector", "tempo", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        deps = service.get("depends_on", [])
        assert set(deps) <= set(services), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
            else:
                assert source in compose.get("volumes", {}), f"{name}: {source}"
        image = service.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image ({image})"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: publish on loopback only ({port})"
    build = services["tailgate"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert services["tailgate"]["stop_grace_period"] == "30s"

    tailgate_config = yaml.safe_load((DEPLOY / "compose" / "tailgate.yaml").read_text())
    assert tailgate_config["downstream"] == "grpc://otel-collector:4317"
    collector = yaml.safe_load((DEPLOY / "compose" / "otel-collector.yaml").read_text())
    assert collector["exporters"]["otlp/tempo"]["endpoint"] == "tempo:4317"
    prometheus = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == ["tailgate:9464"]
    providers = yaml.safe_load((DEPLOY / "compose" / "grafana" / "dashboards.yaml").read_text())["providers"]
    mounted = [v for v in services["grafana"]["volumes"] if v.startswith("./grafana/tailgate-dashboard.json:")]
    assert mounted and mounted[0].split(":")[1].startswith(providers[0]["options"]["path"] + "/")


def test_compose_prometheus_config_passes_promtool(tmp_path):
    shutil.copy(DEPLOY / "compose" / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(DEPLOY / "prometheus" / "tailgate-alerts.yaml", tmp_path / "tailgate-alerts.yaml")
    result = subprocess.run([promtool(), "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def shipped_configs(tmp_path: Path):
    """(name, config file, policies dir layout) of every Tailgate configuration the kit ships."""
    default_policies = (REPO / "policies" / "default.yaml").read_text()
    k8s = yaml.safe_load((K8S / "tailgate-configmap.yaml").read_text())["data"]
    layouts = {
        "image default (deploy/docker/tailgate.yaml)": ((DEPLOY / "docker" / "tailgate.yaml").read_text(),
                                                        {"policies.yaml": default_policies}),
        "compose (deploy/compose/tailgate.yaml)": ((DEPLOY / "compose" / "tailgate.yaml").read_text(),
                                                   {"policies/default.yaml": default_policies}),
        "systemd (deploy/systemd/tailgate.yaml)": ((DEPLOY / "systemd" / "tailgate.yaml").read_text(),
                                                   {"policies.yaml": default_policies}),
        "kubernetes ConfigMap": (k8s["tailgate.yaml"], {"policies.yaml": k8s["policies.yaml"]}),
    }
    for index, (name, (config, files)) in enumerate(layouts.items()):
        directory = tmp_path / f"config{index}"
        directory.mkdir()
        (directory / "tailgate.yaml").write_text(config)
        for relative, text in files.items():
            (directory / relative).parent.mkdir(parents=True, exist_ok=True)
            (directory / relative).write_text(text)
        yield name, directory


def test_every_shipped_configuration_is_accepted_by_tailgate(tmp_path):
    from conftest import tailgate_binary
    k8s_policies = yaml.safe_load((K8S / "tailgate-configmap.yaml").read_text())["data"]["policies.yaml"]
    (tmp_path / "k8s-policies.yaml").write_text(k8s_policies)
    check = subprocess.run([str(tailgate_binary()), "check", str(tmp_path / "k8s-policies.yaml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

    for name, directory in shipped_configs(tmp_path):
        tg = Tailgate(directory, "", config_path=directory / "tailgate.yaml")
        try:
            tg.start(timeout=60)
        except BaseException:
            tg.stop()
            raise
        code = tg.stop()
        assert code == 0, f"{name}: exit {code}\n{tail(tg.log)}"
        log = tail(tg.log)
        assert "warning" not in log.lower(), f"{name}: warnings\n{log}"
