# syntax=docker/dockerfile:1
# NexRL images, two targets (docs/kubernetes.md):
#   docker build --target operator -t nexrl/nexrl-operator:0.1.0 .   the kopf operator, no torch
#   docker build --target runtime  -t nexrl/nexrl:0.1.0 .            Ray head/workers, trainers, vLLM
# Base of the wheel and operator stages: any Debian-like image with Python >= 3.11 and pip on PATH
# (tests/image builds it with podman on a debootstrap bookworm: --build-arg PYTHON_IMAGE=...).
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
# Official vLLM image: CUDA torch (the version vLLM pins) and vLLM with its OpenAI server.
ARG VLLM_IMAGE=vllm/vllm-openai:v0.33.0

# ---- the nexrl wheel, built once for both targets -------------------------------------------------
# pip looks in docker/wheelhouse/ too (empty in git). Offline: fill it with `pip wheel` on the host and
# pass --build-arg PIP_NO_INDEX=1 (tests/image does; pip in a build container may not reach PyPI).
FROM ${PYTHON_IMAGE} AS wheel
ARG PIP_NO_INDEX
WORKDIR /src
COPY pyproject.toml README.md ./
COPY nexrl_runtime ./nexrl_runtime
COPY operator ./operator
RUN --mount=type=bind,source=docker/wheelhouse,target=/wheelhouse \
    pip wheel --no-cache-dir --find-links /wheelhouse --no-deps --wheel-dir /wheels .

# ---- operator: kopf + kubernetes + pydantic: ~170 MB over the base (126 MB is the kubernetes client) --
FROM ${PYTHON_IMAGE} AS operator
ARG VERSION=0.1.0
ARG PIP_NO_INDEX
LABEL org.opencontainers.image.title="nexrl-operator" \
      org.opencontainers.image.description="NexRL Kubernetes operator (NexRLJob -> RayJob, vLLM, trainers)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/nexrl/nexrl"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY docker/operator-requirements.txt /tmp/operator-requirements.txt
RUN --mount=type=bind,source=docker/wheelhouse,target=/wheelhouse \
    pip install --no-cache-dir --find-links /wheelhouse -r /tmp/operator-requirements.txt
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-deps /wheels/nexrl-*.whl
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin nexrl
USER 10001:10001
ENTRYPOINT ["nexrl-operator"]
CMD ["run"]

# ---- runtime: vLLM's CUDA torch + Ray + nexrl + the recipes ----------------------------------------
FROM ${VLLM_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="nexrl" \
      org.opencontainers.image.description="NexRL runtime: controller, rollout workers, trainers, vLLM" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/nexrl/nexrl"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/home/nexrl/.cache/huggingface
# Keep the image's torch and vLLM: nexrl asks torch only for a range, and the constraint makes any
# other resolution an error instead of a second multi-GB torch.
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    python3 -m pip freeze | grep -E '^(torch|vllm)==' > /tmp/keep.txt \
    && python3 -m pip install --no-cache-dir -c /tmp/keep.txt "$(echo /wheels/nexrl-*.whl)[ray]" \
    && rm /tmp/keep.txt
RUN useradd --uid 10001 --user-group --create-home --shell /bin/bash nexrl
WORKDIR /app
COPY --chown=10001:10001 recipe ./recipe
USER 10001:10001
# KubeRay and the operator set each pod's command (ray start, vllm serve, nexrl serve-trainer).
ENTRYPOINT []
CMD ["nexrl", "--help"]
