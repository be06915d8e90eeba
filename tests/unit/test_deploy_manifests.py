"""The manifests of `nbfleet deploy render`: valid against the Kubernetes API schemas of an older and the
newest supported release (strict: no field the API does not know), RBAC exactly the runtime's calls, the
replica and disruption-budget logic, a Secret that carries no real value unless given one, and the CLI.

There is no cluster here: kubernetes-validate checks each manifest against the OpenAPI schemas it bundles.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from typer.testing import CliRunner

from nbfleet.cli.main import app
from nbfleet.deploy import manifests as M
from nbfleet.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# The oldest release the test extra's kubernetes-validate (>=1.30) is sure to bundle, and the newest it does.
VERSIONS = sorted({"1.30.0", kubernetes_validate.latest_version()})

FULL = M.DeployOptions(
    namespace="notebooks",
    replicas=3,
    image="registry.example.com/nbfleet:0.1.0",
    notebook_domain="nb.example.com",
    storage_class="fast-ssd",
    ingress_host="nbfleet.example.com",
    ingress_class="nginx",
    tls_secret="nbfleet-tls",
)
VARIANTS = {
    "defaults": M.DeployOptions(),
    "single": M.DeployOptions(replicas=1, create_namespace=False, public_url="http://nbfleet.internal:8080"),
    "full": FULL,
    "secrets": M.DeployOptions(
        secrets={
            "NBFLEET_SECRET_KEY": Fernet.generate_key().decode(),
            "NBFLEET_DATABASE_URL": "postgresql+psycopg://nbfleet:pw@db:5432/nbfleet",
            "NBFLEET_METRICS_TOKEN": "scrape-me",
        }
    ),
}


def by_kind(manifests: list[dict]) -> dict[str, dict]:
    kinds = [m["kind"] for m in manifests]
    assert len(kinds) == len(set(kinds)), kinds
    return {m["kind"]: m for m in manifests}


def test_the_older_schema_version_is_bundled():
    assert "1.30.0" in kubernetes_validate.utils.all_versions()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_manifest_is_valid_for_the_kubernetes_api(variant, version):
    manifests = M.render(VARIANTS[variant])
    for manifest in manifests:
        # Through YAML and back, as kubectl reads it; strict: an unknown field fails.
        document = yaml.safe_load(M.to_yaml(manifest))
        assert document == manifest
        kubernetes_validate.validate(document, version, strict=True)


def test_the_validator_catches_a_broken_manifest():
    deployment = by_kind(M.render(M.DeployOptions()))["Deployment"]
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)
    deployment["spec"]["replicas"] = 2
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def test_everything_is_in_the_namespace_and_in_apply_order():
    manifests = M.render(FULL)
    assert [m["kind"] for m in manifests] == [
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "Ingress",
    ]
    assert manifests[0]["metadata"]["name"] == "notebooks"
    assert all(m["metadata"]["namespace"] == "notebooks" for m in manifests[1:])
    assert "Namespace" not in by_kind(M.render(VARIANTS["single"]))


def test_the_role_grants_exactly_the_runtime_calls():
    kinds = by_kind(M.render(FULL))
    rules = kinds["Role"]["rules"]
    granted = {(group, resource, verb) for r in rules for group in r["apiGroups"] for resource in r["resources"]
               for verb in r["verbs"]}  # fmt: skip
    expected = {("", resource, verb) for resource, verbs in M.RUNTIME_RBAC_RULES for verb in verbs}
    assert granted == expected
    assert len(granted) == sum(len(r["verbs"]) for r in rules)  # no repeats
    assert dict(M.RUNTIME_RBAC_RULES) == {
        "pods": ("get", "list", "watch", "create", "delete"),
        "services": ("get", "list", "create", "delete"),
        "persistentvolumeclaims": ("get", "list", "create", "delete"),
        "events": ("list", "watch"),
    }
    assert not any("*" in r["verbs"] or "*" in r["resources"] for r in rules)
    binding = kinds["RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "nbfleet"}
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": "notebooks"}
    ]
    assert kinds["ServiceAccount"]["metadata"]["name"] == pod["serviceAccountName"]
    # Only namespaced objects: no ClusterRole, no cluster-wide grant.
    assert not {"ClusterRole", "ClusterRoleBinding"} & set(kinds)


@pytest.mark.parametrize("replicas", [1, 2, 5])
def test_replicas_and_the_disruption_budget(replicas):
    kinds = by_kind(M.render(M.DeployOptions(replicas=replicas)))
    deployment = kinds["Deployment"]["spec"]
    assert deployment["replicas"] == replicas
    pod_labels = deployment["template"]["metadata"]["labels"]
    assert deployment["selector"]["matchLabels"].items() <= pod_labels.items()
    assert kinds["Service"]["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    if replicas == 1:  # a budget of 1 on one replica would block every node drain
        assert "PodDisruptionBudget" not in kinds
        assert "topologySpreadConstraints" not in deployment["template"]["spec"]
    else:
        budget = kinds["PodDisruptionBudget"]["spec"]
        assert budget["minAvailable"] == 1
        assert budget["selector"]["matchLabels"] == deployment["selector"]["matchLabels"]
        assert deployment["template"]["spec"]["topologySpreadConstraints"][0]["whenUnsatisfiable"] == "ScheduleAnyway"


def test_the_secret_is_a_template_that_nbfleet_refuses_to_start_with():
    kinds = by_kind(M.render(M.DeployOptions()))
    data = kinds["Secret"]["stringData"]
    assert data == {"NBFLEET_SECRET_KEY": M.PLACEHOLDER, "NBFLEET_DATABASE_URL": M.PLACEHOLDER}
    assert "data" not in kinds["Secret"]
    # No metrics token unless given: a known token would switch /metrics on for anyone who read this file.
    assert "NBFLEET_METRICS_TOKEN" not in data
    # The placeholder is neither a Fernet key nor a database URL: an unedited template fails at start.
    with pytest.raises(ValueError):
        Fernet(M.PLACEHOLDER.encode())
    with pytest.raises(ArgumentError):
        make_url(M.PLACEHOLDER)


def test_the_secret_carries_what_is_given_and_nothing_secret_is_elsewhere():
    options = VARIANTS["secrets"]
    manifests = M.render(options)
    kinds = by_kind(manifests)
    assert kinds["Secret"]["stringData"] == dict(options.secrets)
    assert not set(M.SECRET_KEYS) & set(kinds["ConfigMap"]["data"])
    others = M.to_yaml_stream([m for m in manifests if m["kind"] != "Secret"])
    for value in options.secrets.values():
        assert value not in others
    with pytest.raises(ValueError, match="not a secret setting"):
        M.render(M.DeployOptions(secrets={"NBFLEET_HOST": "x"}))


def test_the_config_map_holds_settings_nbfleet_knows():
    data = by_kind(M.render(FULL))["ConfigMap"]["data"]
    assert data["NBFLEET_RUNTIME"] == "kubernetes"
    assert data["NBFLEET_KUBE_NAMESPACE"] == "notebooks"
    assert data["NBFLEET_HOST"] == "0.0.0.0"
    assert data["NBFLEET_PORT"] == "8080"
    assert data["NBFLEET_PUBLIC_URL"] == "https://nbfleet.example.com"  # from the Ingress host and its TLS
    assert data["NBFLEET_NOTEBOOK_DOMAIN"] == "nb.example.com"
    assert all(isinstance(v, str) for v in data.values())  # a ConfigMap holds strings only
    # Every setting but the kubernetes runtime's own is one of nbfleet's, with a value it accepts.
    general = {k: v for k, v in data.items() if not k.startswith("NBFLEET_KUBE_") and k != "NBFLEET_RUNTIME"}
    assert {k.removeprefix("NBFLEET_").lower() for k in general} <= set(Settings.model_fields)
    Settings(**{k.removeprefix("NBFLEET_").lower(): v for k, v in general.items()})
    explicit = by_kind(M.render(M.DeployOptions(public_url="https://api.example.com/")))["ConfigMap"]["data"]
    assert explicit["NBFLEET_PUBLIC_URL"] == "https://api.example.com"


def test_the_pod_runs_unprivileged_on_a_read_only_root_with_probes_on_health():
    pod = by_kind(M.render(FULL))["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == FULL.image
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": M.UID,
        "runAsGroup": M.UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert set(mounts) == {M.DATA_DIR, "/tmp"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert all("emptyDir" in volumes[name] for name in mounts.values())
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["envFrom"] == [{"configMapRef": {"name": "nbfleet"}}, {"secretRef": {"name": "nbfleet"}}]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["serviceAccountName"] == "nbfleet"


def test_a_changed_setting_changes_the_pod_template():
    def digest(options):
        return by_kind(M.render(options))["Deployment"]["spec"]["template"]["metadata"]["annotations"]

    assert digest(M.DeployOptions()) == digest(M.DeployOptions())
    assert digest(M.DeployOptions()) != digest(M.DeployOptions(notebook_domain="nb.example.org"))


def test_the_ingress_routes_nbfleet_and_every_notebook_host_to_the_one_port():
    kinds = by_kind(M.render(FULL))
    spec = kinds["Ingress"]["spec"]
    assert [rule["host"] for rule in spec["rules"]] == ["nbfleet.example.com", "*.nb.example.com"]
    for rule in spec["rules"]:
        (path,) = rule["http"]["paths"]
        assert path["backend"] == {"service": {"name": "nbfleet", "port": {"name": "http"}}}
    assert kinds["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    assert spec["tls"] == [{"hosts": ["nbfleet.example.com", "*.nb.example.com"], "secretName": "nbfleet-tls"}]
    assert spec["ingressClassName"] == "nginx"
    assert "Ingress" not in by_kind(M.render(M.DeployOptions()))


@pytest.mark.parametrize(
    "options, message",
    [
        (M.DeployOptions(ingress_host="nbfleet.example.com"), "notebook domain"),
        (M.DeployOptions(tls_secret="tls"), "--ingress-host"),
        (M.DeployOptions(replicas=0), "at least 1"),
        (M.DeployOptions(namespace="Not_A_Label"), "DNS label"),
        (M.DeployOptions(public_url="ftp://x"), "http"),
        (M.DeployOptions(notebook_domain="NB.Example.com"), "notebook domain"),
        (M.DeployOptions(image="nbfleet latest"), "image"),
    ],
)
def test_options_nbfleet_or_kubernetes_would_refuse_are_refused(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        M.render(options)


def test_the_manifests_match_the_dockerfile():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"EXPOSE {M.PORT}" in dockerfile
    assert f"NBFLEET_DATA_DIR={M.DATA_DIR}" in dockerfile
    assert f"USER {M.UID}:{M.UID}" in dockerfile
    assert 'ENTRYPOINT ["nbfleet", "serve"]' in dockerfile
    assert re.search(r"^ARG BASE=python:3\.11-slim$", dockerfile, re.M)


# -- the command ------------------------------------------------------------------------------------


def run(*args: str, env: dict[str, str] | None = None):
    clean = {k: None for k in os.environ if k.startswith("NBFLEET_")}
    return CliRunner().invoke(app, ["deploy", "render", *args], env={**clean, **(env or {})})


def test_render_prints_one_yaml_stream():
    result = run("--replicas", "1", "--namespace", "team-a")
    assert result.exit_code == 0, result.output
    documents = list(yaml.safe_load_all(result.stdout))
    assert documents == M.render(M.DeployOptions(replicas=1, namespace="team-a"))
    assert "REPLACE-ME" in result.stderr  # the note that the Secret is a template


def test_render_writes_one_file_per_manifest(tmp_path):
    out = tmp_path / "manifests"
    result = run(
        "--replicas", "3", "--namespace", "notebooks", "--image", FULL.image, "--notebook-domain", "nb.example.com",
        "--storage-class", "fast-ssd", "--ingress-host", "nbfleet.example.com", "--ingress-class", "nginx",
        "--tls-secret", "nbfleet-tls", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "00-namespace.yaml",
        "01-serviceaccount.yaml",
        "02-role.yaml",
        "03-rolebinding.yaml",
        "04-configmap.yaml",
        "05-secret.yaml",
        "06-deployment.yaml",
        "07-service.yaml",
        "08-poddisruptionbudget.yaml",
        "09-ingress.yaml",
    ]
    assert [yaml.safe_load((out / n).read_text()) for n in names] == M.render(FULL)
    assert stat.S_IMODE((out / "05-secret.yaml").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "06-deployment.yaml").stat().st_mode) == 0o644
    for name in names:
        for version in VERSIONS:
            kubernetes_validate.validate(yaml.safe_load((out / name).read_text()), version, strict=True)


def test_render_takes_secrets_only_from_the_environment_and_only_when_asked():
    key = Fernet.generate_key().decode()
    env = {"NBFLEET_SECRET_KEY": key, "NBFLEET_DATABASE_URL": "postgresql+psycopg://u:pw@db/nbfleet"}
    template = run(env=env)
    assert template.exit_code == 0, template.output
    assert key not in template.stdout and "pw@db" not in template.stdout
    filled = run("--secrets-from-env", env=env)
    assert filled.exit_code == 0, filled.output
    secret = by_kind(list(yaml.safe_load_all(filled.stdout)))["Secret"]
    assert secret["stringData"] == env
    assert "REPLACE-ME" not in filled.stderr


def test_render_refuses_bad_options_with_a_usage_error():
    result = run("--ingress-host", "nbfleet.example.com")
    assert result.exit_code == 2
    assert "--notebook-domain" in result.stderr
    assert result.stdout == ""
