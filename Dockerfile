# meta-outage-exporter container image.
#
#   docker build -t meta-outage-exporter:0.1.0 .
#   docker run --rm -p 10094:10094 meta-outage-exporter:0.1.0
#   docker run --rm meta-outage-exporter:0.1.0 check          # one-shot table, exit 0/1/2
#   docker run --rm -v "$PWD/my.yml:/etc/meta-outage-exporter/config.yml:ro" -p 10094:10094 \
#     meta-outage-exporter:0.1.0 --config.file=/etc/meta-outage-exporter/config.yml
#
# Two stages on the same slim base: `build` turns the dependencies and the exporter into
# wheels; the final stage installs only those wheels (no compiler, no build tools, no
# source tree) and runs as a numeric non-root user. Needs BuildKit (Docker 23+ uses it by
# default; podman/buildah understand RUN --mount too) for the bind mounts from `build`.
#
# The base is pinned by tag, not by digest: no registry is reachable where this file is
# checked, so a digest could not be verified there. Pin the digest in your own build.
# tests/deploy/test_dockerfile.py lints this file (hadolint) and replays its RUN steps in
# fresh virtualenvs, then starts the ENTRYPOINT and runs the HEALTHCHECK (docs/deployment.md,
# "Container").

# The base of both stages. tests/deploy/test_image.py builds this file in podman on a base
# bootstrapped from Debian bookworm's own python3 (no registry is reachable there).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src

# Dependencies first, from pyproject.toml alone: this layer is rebuilt only when they change,
# not on every change to the exporter's code.
COPY pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > requirements.txt \
 && pip wheel --wheel-dir /wheels/deps --requirement requirements.txt

# Then the exporter itself (README.md is the package's long description).
COPY README.md ./
COPY exporter ./exporter
RUN pip wheel --no-deps --wheel-dir /wheels/app .


FROM ${BASE}

LABEL org.opencontainers.image.title="meta-outage-exporter" \
      org.opencontainers.image.description="Is Meta (Facebook, Instagram, WhatsApp, ...) down, at which layer, or is it us?" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    HEALTHCHECK_URL=http://127.0.0.1:10094/-/healthy

# Dependencies in their own layer, installed from the build stage's wheels only (--no-index:
# nothing is fetched here). The wheels are bind-mounted, so they take no space in the image.
RUN --mount=type=bind,from=build,source=/wheels/deps,target=/wheels/deps \
    --mount=type=bind,from=build,source=/src/requirements.txt,target=/wheels/requirements.txt \
    pip install --no-index --find-links /wheels/deps --requirement /wheels/requirements.txt

RUN --mount=type=bind,from=build,source=/wheels/app,target=/wheels/app \
    pip install --no-index --no-deps /wheels/app/meta_outage_exporter-*.whl

# Optional config: mount a file here and pass --config.file=/etc/meta-outage-exporter/config.yml
# (the built-in Meta catalogue is used without one). Reload with SIGHUP or POST /-/reload.
WORKDIR /etc/meta-outage-exporter

# Numeric, so that Kubernetes' runAsNonRoot can verify it without a passwd entry.
USER 65532:65532
EXPOSE 10094

# No curl in the slim image: the image's own Python asks /-/healthy. Set HEALTHCHECK_URL
# when you change --web.listen-address.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=4)"]

ENTRYPOINT ["meta-outage-exporter"]
CMD ["run"]
