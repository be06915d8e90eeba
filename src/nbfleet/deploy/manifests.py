"""The Kubernetes manifests of an nbfleet installation, as plain dicts (no Kubernetes client needed).

``render(DeployOptions(...))`` gives, in the order ``kubectl apply`` should see them: the Namespace (unless
it is managed elsewhere), the ServiceAccount, Role and RoleBinding the kubernetes runtime acts through, the
ConfigMap of non-secret settings, the Secret (a template unless values are given), the Deployment, its
Service, a PodDisruptionBudget when there is more than one replica, and an Ingress when a host is given.
docs/kubernetes.md ("Running nbfleet on a cluster") explains each; tests/unit/test_deploy_manifests.py
validates them against the Kubernetes API schemas.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from .. import __version__

Manifest = dict[str, Any]

NAME = "nbfleet"
PORT = 8080  # the one port: API, console and the notebook proxy (Dockerfile: EXPOSE 8080)
DATA_DIR = "/var/lib/nbfleet"  # the image's NBFLEET_DATA_DIR; an emptyDir here (root file system read-only)
UID = 10001  # the image's user and group (Dockerfile)
DEFAULT_IMAGE = f"nbfleet:{__version__}"
# Put where a secret value belongs until the operator gives one. nbfleet refuses to start with it: it is
# neither a Fernet key nor a database URL (tests/unit/test_deploy_manifests.py checks both), so a template
# applied unedited fails loudly instead of running with a key that every reader of this file knows.
PLACEHOLDER = "REPLACE-ME"
# Settings that are secrets: in the Secret, never in the ConfigMap. The metrics token is optional (unset:
# /metrics is off), so the template leaves it out rather than enabling /metrics with a known token.
SECRET_KEYS = ("NBFLEET_SECRET_KEY", "NBFLEET_DATABASE_URL", "NBFLEET_METRICS_TOKEN")
REQUIRED_SECRETS = ("NBFLEET_SECRET_KEY", "NBFLEET_DATABASE_URL")

# Exactly the API calls the kubernetes runtime makes (src/nbfleet/runtime/, the kubernetes runtime: its pods,
# services and volume claims per instance, and the events it reports), and nothing more: keep the two in step.
# Core API group only; everything is namespaced, so a Role in nbfleet's namespace is enough.
RUNTIME_RBAC_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pods", ("get", "list", "watch", "create", "delete")),
    ("services", ("get", "list", "create", "delete")),
    ("persistentvolumeclaims", ("get", "list", "create", "delete")),
    ("events", ("list", "watch")),
)

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DNS_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_NOTEBOOK_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")  # as Settings.notebook_domain


@dataclass(frozen=True)
class DeployOptions:
    namespace: str = NAME
    replicas: int = 2
    image: str = DEFAULT_IMAGE
    public_url: str | None = None
    notebook_domain: str | None = None
    storage_class: str | None = None
    ingress_host: str | None = None
    ingress_class: str | None = None
    tls_secret: str | None = None
    create_namespace: bool = True
    # Values for the Secret (NBFLEET_SECRET_KEY, NBFLEET_DATABASE_URL, NBFLEET_METRICS_TOKEN); what is not
    # given stays PLACEHOLDER (the metrics token: left out).
    secrets: Mapping[str, str] = field(default_factory=dict)

    def check(self) -> None:
        """Raise ValueError, saying which, for an option that would make manifests Kubernetes or nbfleet refuse."""
        if not _DNS_LABEL.match(self.namespace):
            raise ValueError(f"namespace {self.namespace!r} is not a DNS label (a-z, 0-9, '-', at most 63)")
        if self.replicas < 1:
            raise ValueError("replicas must be at least 1")
        if not self.image.strip() or any(c.isspace() for c in self.image):
            raise ValueError(f"image {self.image!r} is not an image reference")
        if self.public_url is not None:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"public URL {self.public_url!r} is not an http(s) URL")
        if self.notebook_domain is not None and not _NOTEBOOK_DOMAIN.match(self.notebook_domain):
            raise ValueError(f"notebook domain {self.notebook_domain!r} is not a lower-case DNS name")
        if self.storage_class is not None and not _DNS_NAME.match(self.storage_class):
            raise ValueError(f"storage class {self.storage_class!r} is not a DNS name")
        if self.ingress_host is not None:
            if not _DNS_NAME.match(self.ingress_host):
                raise ValueError(f"ingress host {self.ingress_host!r} is not a lower-case DNS name")
            if self.notebook_domain is None:
                raise ValueError(
                    "an Ingress needs the notebook domain too (--notebook-domain): every notebook is served "
                    "on <id>.<notebook domain>, routed through the same Ingress by a wildcard host"
                )
        elif self.tls_secret is not None or self.ingress_class is not None:
            raise ValueError("the TLS secret and ingress class belong to an Ingress: give its host (--ingress-host)")
        unknown = set(self.secrets) - set(SECRET_KEYS)
        if unknown:
            raise ValueError(f"not a secret setting: {', '.join(sorted(unknown))}")

    def effective_public_url(self) -> str | None:
        """The public URL given, else the Ingress host's (https with a TLS secret)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        if self.ingress_host:
            return f"{'https' if self.tls_secret else 'http'}://{self.ingress_host}"
        return None


def labels(component: str = "server") -> dict[str, str]:
    return {
        "app.kubernetes.io/name": NAME,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/version": __version__,
        "app.kubernetes.io/managed-by": "nbfleet-deploy-render",
    }


def selector() -> dict[str, str]:
    # Name and component: the notebook pods the runtime creates in the same namespace never match it.
    return {"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": "server"}


def _meta(options: DeployOptions, name: str = NAME) -> dict[str, Any]:
    return {"name": name, "namespace": options.namespace, "labels": labels()}


def namespace(options: DeployOptions) -> Manifest:
    ours = {k: v for k, v in labels().items() if k != "app.kubernetes.io/component"}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": options.namespace, "labels": ours}}


def service_account(options: DeployOptions) -> Manifest:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(options)}


def role(options: DeployOptions) -> Manifest:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(options),
        "rules": [
            {"apiGroups": [""], "resources": [resource], "verbs": list(verbs)} for resource, verbs in RUNTIME_RBAC_RULES
        ],
    }


def role_binding(options: DeployOptions) -> Manifest:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(options),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": options.namespace}],
    }


def settings(options: DeployOptions) -> dict[str, str]:
    """The non-secret NBFLEET_* settings of every replica."""
    values = {
        "NBFLEET_RUNTIME": "kubernetes",
        "NBFLEET_KUBE_NAMESPACE": options.namespace,
        "NBFLEET_HOST": "0.0.0.0",
        "NBFLEET_PORT": str(PORT),
        "NBFLEET_DATA_DIR": DATA_DIR,
        "NBFLEET_LOG_FORMAT": "json",
    }
    public_url = options.effective_public_url()
    if public_url:
        values["NBFLEET_PUBLIC_URL"] = public_url
    if options.notebook_domain:
        values["NBFLEET_NOTEBOOK_DOMAIN"] = options.notebook_domain
    if options.storage_class:
        values["NBFLEET_KUBE_STORAGE_CLASS"] = options.storage_class
    return values


def config_map(options: DeployOptions) -> Manifest:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(options), "data": settings(options)}


def secret(options: DeployOptions) -> Manifest:
    """NBFLEET_SECRET_KEY (one key shared by every replica), NBFLEET_DATABASE_URL and, if given,
    NBFLEET_METRICS_TOKEN; PLACEHOLDER where no value is given."""
    data = {key: options.secrets.get(key) or PLACEHOLDER for key in REQUIRED_SECRETS}
    if options.secrets.get("NBFLEET_METRICS_TOKEN"):
        data["NBFLEET_METRICS_TOKEN"] = options.secrets["NBFLEET_METRICS_TOKEN"]
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(options), "type": "Opaque", "stringData": data}


def _probe(period: int, timeout: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def deployment(options: DeployOptions) -> Manifest:
    pod_labels = labels()
    # A changed ConfigMap does not restart pods by itself: its digest in the pod template does.
    digest = hashlib.sha256(json.dumps(settings(options), sort_keys=True).encode()).hexdigest()[:16]
    container: dict[str, Any] = {
        "name": NAME,
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        # The image's entry point is `nbfleet serve`; everything else comes from the environment.
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": NAME}}, {"secretRef": {"name": NAME}}],
        "resources": {
            "requests": {"cpu": "250m", "memory": "512Mi"},
            # Password checks take 64 MiB each (NBFLEET_SIGNIN_CONCURRENT_CHECKS, default 2).
            "limits": {"cpu": "2", "memory": "1Gi"},
        },
        # Migrations run at the first start (replicas take turns): give them time before liveness counts.
        "startupProbe": _probe(period=2, timeout=3, failures=90),
        "readinessProbe": _probe(period=5, timeout=3, failures=2),
        "livenessProbe": _probe(period=10, timeout=5, failures=3),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec: dict[str, Any] = {
        "serviceAccountName": NAME,
        "automountServiceAccountToken": True,  # the kubernetes runtime's credentials
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # uvicorn's graceful shutdown takes up to 10 s; open notebook websockets are then closed.
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
        # Everything lasting is in PostgreSQL; the data dir keeps only the bootstrap's credentials.json
        # (on the replica that bootstrapped) and caches.
        "volumes": [
            {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
    }
    if options.replicas > 1:
        pod_spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector()},
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(options),
        "spec": {
            "replicas": options.replicas,
            "selector": {"matchLabels": selector()},
            # One new replica at a time, never one fewer than asked for (replicas are interchangeable).
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": {"nbfleet/config-digest": digest}},
                "spec": pod_spec,
            },
        },
    }


def service(options: DeployOptions) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(options),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def pod_disruption_budget(options: DeployOptions) -> Manifest | None:
    """With several replicas, a drain keeps one serving; with one, a budget would block every drain."""
    if options.replicas < 2:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(options),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": selector()}},
    }


def ingress(options: DeployOptions) -> Manifest | None:
    """nbfleet's host and the wildcard of the notebook domain, both to the one Service port."""
    if not options.ingress_host:
        return None
    assert options.notebook_domain is not None  # DeployOptions.check
    backend = {"service": {"name": NAME, "port": {"name": "http"}}}
    hosts = [options.ingress_host, f"*.{options.notebook_domain}"]
    spec: dict[str, Any] = {
        "rules": [
            {"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}
            for host in hosts
        ]
    }
    if options.ingress_class:
        spec["ingressClassName"] = options.ingress_class
    if options.tls_secret:
        spec["tls"] = [{"hosts": hosts, "secretName": options.tls_secret}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            **_meta(options),
            # ingress-nginx: notebook uploads have no size limit in nbfleet, kernels' websockets stay open
            # for hours. Other controllers ignore these; set their equivalents.
            "annotations": {
                "nginx.ingress.kubernetes.io/proxy-body-size": "0",
                "nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
                "nginx.ingress.kubernetes.io/proxy-send-timeout": "3600",
            },
        },
        "spec": spec,
    }


def render(options: DeployOptions) -> list[Manifest]:
    """Every manifest, in the order to apply them."""
    options.check()
    built = [
        namespace(options) if options.create_namespace else None,
        service_account(options),
        role(options),
        role_binding(options),
        config_map(options),
        secret(options),
        deployment(options),
        service(options),
        pod_disruption_budget(options),
        ingress(options),
    ]
    return [m for m in built if m is not None]


def file_name(index: int, manifest: Manifest) -> str:
    """``NN-kind.yaml``: ``kubectl apply -f DIR`` applies a directory's files in name order."""
    return f"{index:02d}-{manifest['kind'].lower()}.yaml"


def to_yaml(manifest: Manifest) -> str:
    return yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False)


def to_yaml_stream(manifests: list[Manifest]) -> str:
    return "".join(f"---\n{to_yaml(m)}" for m in manifests)
