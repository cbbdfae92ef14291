"""The two container images, built by `cdk deploy` from this repository (synth only stages files).

Both use the repository root as build context; `.dockerignore` there is an allow-list, and the
exclusions below repeat what must never be staged into cdk.out (virtualenvs, caches, node_modules,
earlier cloud assemblies), in case someone loosens it.
"""

from pathlib import Path

from aws_cdk import aws_ecs as ecs
from aws_cdk.aws_ecr_assets import Platform

REPO_ROOT = Path(__file__).resolve().parents[2]
PIPELINE_DOCKERFILE = "infra/docker/pipeline.Dockerfile"
SERVING_DOCKERFILE = "serving/Dockerfile"

STAGING_EXCLUDES = (
    ".git",
    ".venv",
    ".lorechat",
    "infra/node_modules",
    "**/node_modules",
    "cdk.out",
    "**/cdk.out",
    "**/__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "bench/results",
)


def _image(dockerfile: str) -> ecs.ContainerImage:
    return ecs.ContainerImage.from_asset(
        str(REPO_ROOT),
        file=dockerfile,
        exclude=list(STAGING_EXCLUDES),
        platform=Platform.LINUX_AMD64,
    )


def pipeline_image() -> ecs.ContainerImage:
    """Dagster webserver, daemon, code server and run workers: one image, four commands."""
    return _image(PIPELINE_DOCKERFILE)


def serving_image() -> ecs.ContainerImage:
    """The FastAPI serving container (no Dagster, no parsing stack)."""
    return _image(SERVING_DOCKERFILE)
