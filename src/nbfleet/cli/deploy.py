"""``nbfleet deploy render``: the Kubernetes manifests of an nbfleet installation (docs/kubernetes.md)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from ..deploy import manifests as M

deploy_app = typer.Typer(help="Run nbfleet itself on a Kubernetes cluster.", no_args_is_help=True)


@deploy_app.command("render")
def render_command(
    replicas: int = typer.Option(2, "--replicas", help="Replicas of nbfleet (PostgreSQL is shared by all)."),
    namespace: str = typer.Option(M.NAME, "--namespace", help="Namespace of nbfleet and of its notebooks."),
    create_namespace: bool = typer.Option(
        True, "--create-namespace/--no-namespace", help="Include the Namespace (leave it out if managed elsewhere)."
    ),
    image: str = typer.Option(M.DEFAULT_IMAGE, "--image", help="nbfleet's image (built from the Dockerfile)."),
    public_url: str | None = typer.Option(
        None, "--public-url", help="Where users reach nbfleet (default: the Ingress host's URL)."
    ),
    notebook_domain: str | None = typer.Option(
        None, "--notebook-domain", help="Notebooks are served on <id>.<this> (a wildcard DNS name)."
    ),
    storage_class: str | None = typer.Option(
        None, "--storage-class", help="Storage class of the notebooks' volumes (default: the cluster's)."
    ),
    ingress_host: str | None = typer.Option(
        None, "--ingress-host", help="Add an Ingress for this host and *.<notebook domain>."
    ),
    ingress_class: str | None = typer.Option(None, "--ingress-class", help="The Ingress's ingressClassName."),
    tls_secret: str | None = typer.Option(
        None, "--tls-secret", help="TLS Secret for the Ingress (a certificate for both hosts)."
    ),
    secrets_from_env: bool = typer.Option(
        False,
        "--secrets-from-env",
        help="Fill the Secret from this command's NBFLEET_SECRET_KEY, NBFLEET_DATABASE_URL and "
        "NBFLEET_METRICS_TOKEN (default: a template with REPLACE-ME, which nbfleet refuses to start with).",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Write one file per manifest into this directory (default: one YAML stream on stdout)."
    ),
) -> None:
    """Render the manifests: RBAC for the kubernetes runtime, settings, the Secret, the Deployment, its
    Service, a PodDisruptionBudget and an optional Ingress."""
    secrets = {k: os.environ[k] for k in M.SECRET_KEYS if secrets_from_env and os.environ.get(k)}
    options = M.DeployOptions(
        namespace=namespace,
        replicas=replicas,
        image=image,
        public_url=public_url,
        notebook_domain=notebook_domain,
        storage_class=storage_class,
        ingress_host=ingress_host,
        ingress_class=ingress_class,
        tls_secret=tls_secret,
        create_namespace=create_namespace,
        secrets=secrets,
    )
    try:
        manifests = M.render(options)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    missing = [k for k in M.REQUIRED_SECRETS if k not in secrets]
    if out is None:
        typer.echo(M.to_yaml_stream(manifests), nl=False)
    else:
        out.mkdir(parents=True, exist_ok=True)
        for index, manifest in enumerate(manifests):
            path = out / M.file_name(index, manifest)
            # The Secret's file only for its owner, whatever it holds.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if manifest["kind"] == "Secret" else 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(M.to_yaml(manifest))
            if manifest["kind"] == "Secret":
                os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT
            typer.echo(str(path), err=True)
    if missing:
        typer.echo(
            f"note: the Secret holds {M.PLACEHOLDER} for {', '.join(missing)}: set them before applying "
            "(docs/kubernetes.md, 'Running nbfleet on a cluster')",
            err=True,
        )
