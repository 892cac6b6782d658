# syntax=docker/dockerfile:1
#
# Targets (the last one, `runtime`, is the default):
#   docker build -t sentiment-service .                          # API server, CPU torch (~1.3 GB)
#   docker build --target train-gpu -t sentiment-service:gpu .   # GPU training (CUDA torch, several GB)
#
# The runtime image serves the model in $SENTIMENT_MODEL_DIR (/models); with none there, `python -m app`
# trains the default one first (needs network access for the data, and a writable /models).
# Every SENTIMENT_* setting (app/settings.py) can be changed with `docker run -e`.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builders: a virtualenv in /opt/venv, copied whole into the runtime stages --------------------
FROM ${PYTHON_IMAGE} AS builder-base
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first (this layer is rebuilt only when pyproject.toml changes). torch is left out here
# and installed by the CPU or GPU builder below, at the version pinned in pyproject.toml.
COPY pyproject.toml ./
RUN python -c "import re, tomllib; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
is_torch = lambda d: re.split(r'[<>=!~;\[ ]', d)[0] == 'torch'; \
open('/tmp/requirements.txt', 'w').write(''.join(d + '\n' for d in deps if not is_torch(d))); \
open('/tmp/torch.txt', 'w').write(''.join(d + '\n' for d in deps if is_torch(d)))" \
&& pip install -r /tmp/requirements.txt

FROM builder-base AS builder
# The CPU-only wheel (~190 MB) instead of PyPI's CUDA build (several GB of nvidia-* wheels).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Drop torch's C++ headers and C++ test binaries (~145 MB): only compiling extensions or
# torch.compile would need them; the service runs TorchScript.
RUN pip install --index-url "${TORCH_INDEX_URL}" -r /tmp/torch.txt \
 && rm -rf /opt/venv/lib/python3*/site-packages/torch/include /opt/venv/lib/python3*/site-packages/torch/test
COPY README.md ./
COPY model ./model
COPY training ./training
COPY app ./app
RUN pip install --no-deps .

FROM builder-base AS builder-gpu
# PyPI's default torch wheel is the CUDA build; it brings the CUDA runtime as nvidia-* wheels, so the
# host needs only the NVIDIA driver and the NVIDIA Container Toolkit.
ARG TORCH_INDEX_URL=https://pypi.org/simple
RUN pip install --index-url "${TORCH_INDEX_URL}" -r /tmp/torch.txt
COPY README.md ./
COPY model ./model
COPY training ./training
COPY app ./app
RUN pip install --no-deps .

# ---- what every runtime image shares: a non-root user, writable /models and data cache ------------
FROM ${PYTHON_IMAGE} AS runtime-base
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home --shell /usr/sbin/nologin app \
 && mkdir -p /models /data-cache \
 && chown app:app /models /data-cache
# Named volumes mounted on /models and /data-cache start as copies of these (empty, app-owned) folders.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    SENTIMENT_MODEL_DIR=/models \
    SENTIMENT_DATA_CACHE=/data-cache
WORKDIR /home/app

# ---- GPU training: `docker run --gpus all -v models:/models sentiment-service:gpu [training flags]` -----
FROM runtime-base AS train-gpu
COPY --from=builder-gpu /opt/venv /opt/venv
USER 10001:10001
ENTRYPOINT ["python", "-m", "training", "--out", "/models"]
CMD []

# ---- API server (default target) ---------------------------------------------------------------------
FROM runtime-base AS runtime
COPY --from=builder /opt/venv /opt/venv
# One torch thread per worker; scale with SENTIMENT_WORKERS or with replicas. The automatic count (0)
# sees every CPU of the host, not a CPU quota (--cpus, Kubernetes limits), and more threads than free
# cores is a cliff: with 2 threads on 2 busy cores a 64-text batch took 2.2 s instead of 20 ms.
ENV SENTIMENT_HOST=0.0.0.0 \
    SENTIMENT_PORT=8000 \
    SENTIMENT_WORKERS=1 \
    SENTIMENT_TORCH_THREADS=1
USER 10001:10001
EXPOSE 8000
# Liveness (/health); readiness is /ready. Reads the port the server was given.
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SENTIMENT_PORT', '8000') + '/health', timeout=4)"]
# Exec form: python is PID 1 and gets SIGTERM itself (drain, then graceful shutdown).
CMD ["python", "-m", "app"]
