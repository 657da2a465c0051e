# syntax=docker/dockerfile:1
#
# recsys image: one image for every role (`recsys worker`, `recsys train`, `recsys retrain`, ...).
#
#   docker build -t recsys .
#   docker run --rm recsys --help
#
# Two stages: `build` installs into a virtual environment (with a compiler at hand in case a
# dependency has no wheel for this platform); `runtime` copies only that environment.

ARG PYTHON_IMAGE=python:3.11-slim

# ----------------------------------------------------------------------------- build
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch FIRST and pinned, from the CPU-only index: the default index would pull several GB of
# CUDA packages. `pip install .` below then finds torch==2.13.0 (2.13.0+cpu) already satisfied.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /src
# pyproject.toml names README.md as the package's readme: both are needed to build it.
COPY pyproject.toml README.md ./
COPY stream_app ./stream_app
RUN pip install . \
    && python -c "import torch, stream_app; assert torch.__version__.split('+')[0] == '${TORCH_VERSION}'"

# ----------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="recsys" \
      org.opencontainers.image.description="Recommender whose ID vectors come from frozen autoencoders, served as a Faust stream on Kafka" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed non-root uid/gid, so that volumes and Kubernetes' fsGroup can match it.
ARG APP_UID=10001
RUN groupadd --system --gid "${APP_UID}" recsys \
    && useradd --system --uid "${APP_UID}" --gid recsys --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin recsys

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib \
    RECSYS_ARTIFACTS_DIR=/app/model_artifacts \
    RECSYS_STORE_DIR=/app/stores \
    RECSYS_DATA_CACHE=/app/.cache/recsys \
    RECSYS_WEB_PORT=6066

WORKDIR /app
# Created here, owned by the app user: an empty named volume mounted on them takes this ownership.
RUN mkdir -p /app/model_artifacts /app/stores /app/.cache/recsys \
    && chown -R recsys:recsys /app

USER ${APP_UID}:${APP_UID}

# model_artifacts: versioned models and the `current` pointer (written by train/retrain, read by workers).
# stores: the worker's RocksDB tables (a local cache of its changelog topics; one per replica).
VOLUME ["/app/model_artifacts", "/app/stores"]

# The worker's web server: /metrics (Prometheus), /healthz (liveness), /ready (readiness); nothing else.
EXPOSE 6066

# Meaningful for `recsys worker`; one-shot roles (train, topic creation) disable it in compose.
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('RECSYS_WEB_PORT', '6066'), timeout=4)"]

ENTRYPOINT ["recsys"]
CMD ["--help"]
