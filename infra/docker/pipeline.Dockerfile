# The LoreChat pipeline image: Dagster webserver, daemon, code-location server and run workers.
# Build from the repository root:
#   docker build -f infra/docker/pipeline.Dockerfile -t lorechat-pipeline .
# (`cdk deploy` builds it as an asset; the task definitions choose the command.)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    DO_NOT_TRACK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    LORECHAT_HOME=/tmp/lorechat

# libmagic: content sniffing of documents with a misleading extension (python-magic).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmagic1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/lorechat
# torch first, CPU build from PyTorch's index: the project's pin (torch==2.13.0) is then
# satisfied, and pip never pulls the multi-GB CUDA build.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md ./
COPY lorechat_pipeline ./lorechat_pipeline
# dagster-postgres of the same release family as dagster 1.13.27 (storage in RDS).
RUN pip install --no-cache-dir . dagster-postgres==0.29.27

COPY infra/dagster/dagster.yaml ${DAGSTER_HOME}/dagster.yaml

RUN useradd --system --uid 10001 --home-dir /opt/dagster dagster \
 && mkdir -p /tmp/lorechat \
 && chown -R dagster /opt/dagster /tmp/lorechat
USER dagster
EXPOSE 3000 4000
# The task definition sets the command: dagster-webserver, dagster-daemon run, or
# dagster api grpc; run tasks get `dagster api execute_run` from the EcsRunLauncher.
CMD ["dagster", "api", "grpc", "--host", "0.0.0.0", "--port", "4000", "--module-name", "lorechat_pipeline.definitions"]
