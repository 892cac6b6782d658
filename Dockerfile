#   docker build -t sentiment-service .        # the API server image, CPU torch (~1.15 GB)
#
# Only CPU stages: the classic builder (DOCKER_BUILDKIT=0) builds every stage in the file, used or not.
# Serving only: the image holds what app/, core/, model/ and scoring/ import (requirements.lock), no
# training code and none of the `train` extra. Training runs in its own image, deploy/gpu/Dockerfile
# (PyPI's CUDA build, or the CPU one as compose's `train` service builds it).
#
# The image carries the default model (the repository's models/default: the distilled SST-2
# embedding + biLSTM, 18 MB) at /opt/sentiment/models/default, root-owned and read-only, and serves it:
# `docker run -p 8000:8000 sentiment-service` needs no training, no network and no volume.
# To serve another model, mount it and point SENTIMENT_MODEL_DIR at it (an artifact directory, or a
# folder whose `latest` points at one), e.g. `-v sentiment-service_models:/models:ro -e
# SENTIMENT_MODEL_DIR=/models`. Pointed at a folder with no model in it, `python -m app` exits and says so.
# Every SENTIMENT_* setting (app/settings.py) can be changed with `docker run -e`.
#
# Reproducible: every Python package comes from requirements.lock (exact versions and sha256 hashes,
# regenerated with scripts/lock-requirements.sh), except torch, pinned in pyproject.toml and installed
# from the PyTorch CPU index, which the lock tool cannot reach here (see the lock file's header).

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: a virtualenv in /opt/venv, copied whole into the runtime stage ----------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first (these layers are rebuilt only when the lock or pyproject.toml changes): the lock
# with --require-hashes (also setuptools, the build backend of the last step, and torch's own
# dependencies), then torch alone at the version pinned in pyproject.toml.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
# The CPU-only wheel (~190 MB) instead of PyPI's CUDA build (several GB of nvidia-* wheels).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY pyproject.toml ./
# Drop torch's C++ headers and C++ test binaries (~145 MB): only compiling extensions or
# torch.compile would need them; the service runs TorchScript.
RUN python -c "import re, tomllib; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
is_torch = lambda d: re.split(r'[<>=!~;\[ ]', d)[0] == 'torch'; \
open('/tmp/torch.txt', 'w').write(''.join(d + '\n' for d in deps if is_torch(d)))" \
 && pip install --no-deps --index-url "${TORCH_INDEX_URL}" -r /tmp/torch.txt \
 && pip check \
 && rm -rf /opt/venv/lib/python3*/site-packages/torch/include /opt/venv/lib/python3*/site-packages/torch/test
COPY README.md ./
COPY model ./model
COPY core ./core
COPY app ./app
# sentiment-score (bulk scoring of CSV/JSON Lines files; Parquet needs the `scoring` extra, not installed here)
COPY scoring ./scoring
# No build isolation: builds with the locked setuptools instead of fetching the newest one. The
# sentiment-train command would only fail here (no training package): removed.
RUN pip install --no-deps --no-build-isolation . \
 && rm /opt/venv/bin/sentiment-train

# ---- the default model: root-owned, readable by all, writable by none but root ---------------------
# Modes set here, not taken from the checkout (a umask of 077 would leave the files unreadable to the
# app user); the runtime stage copies the result in one layer.
FROM ${PYTHON_IMAGE} AS default-model
COPY models/default /opt/sentiment/models/default
RUN chmod -R u=rwX,go=rX /opt/sentiment

# ---- API server (the default target) ---------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# A non-root user; a writable /models for models trained into volumes (a named volume mounted there
# starts as a copy of this empty, app-owned folder). No data cache: serving reads no corpora.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home --shell /usr/sbin/nologin app \
 && mkdir -p /models \
 && chown app:app /models
# Before the virtualenv: a code or dependency change does not copy the model again.
COPY --from=default-model /opt/sentiment /opt/sentiment
COPY --from=builder /opt/venv /opt/venv
# One torch thread per worker; scale with SENTIMENT_WORKERS or with replicas. The automatic count (0)
# sees every CPU of the host, not a CPU quota (--cpus, Kubernetes limits), and more threads than free
# cores is a cliff: with 2 threads on 2 busy cores a 64-text batch took 2.2 s instead of 20 ms.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SENTIMENT_MODEL_DIR=/opt/sentiment/models/default \
    SENTIMENT_HOST=0.0.0.0 \
    SENTIMENT_PORT=8000 \
    SENTIMENT_WORKERS=1 \
    SENTIMENT_TORCH_THREADS=1
WORKDIR /home/app
USER 10001:10001
EXPOSE 8000
# Liveness (/health); readiness is /ready. Reads the port the server was given. The start period covers
# loading and warming the model (no training: the image has one).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SENTIMENT_PORT', '8000') + '/health', timeout=4)"]
# Exec form, no shell in between: SIGTERM reaches python itself (drain, then graceful shutdown). Under
# `docker run` python is PID 1; with `--init` or compose's `init: true`, docker-init (tini) is PID 1
# and forwards the signal to it.
CMD ["python", "-m", "app"]
