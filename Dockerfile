# nbfleet's own image: `nbfleet serve` on 0.0.0.0:8080 as an unprivileged user, with the PostgreSQL driver.
# For a cluster: docs/kubernetes.md ("Running nbfleet on a cluster"); the manifests: `nbfleet deploy render`.
#
#   docker build -t nbfleet:0.1.0 .
#
# BASE is any Debian-like image with Python 3.11, python3 -m venv and useradd; every stage uses it, so the
# virtual environment built in the first runs unchanged in the last. Without Docker Hub, pass a base of
# your own, e.g. the Debian that `nbfleet images build --runtime docker` imports (tests/docker does that):
#   docker build --network host --build-arg BASE=nbfleet/base:bookworm-<digest> -t nbfleet:0.1.0 .
# The build installs from the package index; certificate authorities it must trust (a company proxy's) go
# into deploy/ca/*.crt first.
ARG BASE=python:3.11-slim

# 1. The dependencies, from pyproject.toml alone (nbfleet a stand-in package here): a layer that a change of
#    nbfleet's source or README leaves cached.
FROM ${BASE} AS deps
# Extras beyond the server itself: the PostgreSQL driver, and the kubernetes runtime's client where the
# package declares one (pip notes an extra it does not know and goes on).
ARG EXTRAS=postgres,kubernetes
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY deploy/ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null \
 && python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
 && python3 -m venv /opt/nbfleet
COPY pyproject.toml /src/
RUN mkdir -p /src/src/nbfleet && touch /src/src/nbfleet/__init__.py /src/README.md \
 && /opt/nbfleet/bin/pip install "/src[${EXTRAS}]" \
 && rm -rf /src

# 2. nbfleet itself, as a wheel.
FROM deps AS wheel
COPY pyproject.toml README.md /src/
COPY src/ /src/src/
RUN /opt/nbfleet/bin/pip wheel --no-deps --wheel-dir /wheel /src

# 3. What runs: the dependencies' environment as it is, nbfleet's wheel installed into it (no network).
FROM ${BASE}
# uid and gid 10001, as the manifests' securityContext says; the data dir is the only place it writes
# (an emptyDir on a cluster, whose root file system is read-only).
RUN groupadd --gid 10001 nbfleet \
 && useradd --uid 10001 --gid 10001 --home-dir /var/lib/nbfleet --no-create-home --shell /usr/sbin/nologin nbfleet \
 && mkdir -p /var/lib/nbfleet && chown 10001:10001 /var/lib/nbfleet && chmod 0700 /var/lib/nbfleet
COPY --from=deps /opt/nbfleet /opt/nbfleet
COPY --from=wheel /wheel/ /tmp/wheel/
RUN /opt/nbfleet/bin/pip install --no-index --no-deps --force-reinstall --no-cache-dir --disable-pip-version-check \
        /tmp/wheel/*.whl \
 && rm -rf /tmp/wheel \
 && /opt/nbfleet/bin/nbfleet --help >/dev/null
ENV PATH=/opt/nbfleet/bin:/usr/local/bin:/usr/bin:/bin \
    HOME=/var/lib/nbfleet \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NBFLEET_HOST=0.0.0.0 \
    NBFLEET_PORT=8080 \
    NBFLEET_DATA_DIR=/var/lib/nbfleet
USER 10001:10001
WORKDIR /var/lib/nbfleet
EXPOSE 8080
# No curl in the image: Python asks /health, on whatever NBFLEET_PORT says.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('NBFLEET_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["nbfleet", "serve"]
