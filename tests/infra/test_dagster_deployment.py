"""The deployment's dagster.yaml and the pipeline image that carries it."""

import re
from pathlib import Path

import pytest
import yaml

from infra.building_blocks.dagster import (
    COMPUTE_LOG_BUCKET_ENV,
    COMPUTE_LOG_PREFIX,
    RUN_CONTAINER_NAME,
    RUN_TASK_DEFINITION_ENV,
)
from infra.building_blocks.images import PIPELINE_DOCKERFILE, REPO_ROOT

INSTANCE_YAML = REPO_ROOT / "infra" / "dagster" / "dagster.yaml"
POSTGRES_VARIABLES = (
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_DB",
    "DAGSTER_PG_USERNAME",
    "DAGSTER_PG_PASSWORD",
)


@pytest.fixture
def task_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in POSTGRES_VARIABLES:
        monkeypatch.setenv(name, "5432" if name.endswith("PORT") else "placeholder")
    monkeypatch.setenv(RUN_TASK_DEFINITION_ENV, "arn:aws:ecs:us-east-1:1:task-definition/run:1")
    monkeypatch.setenv(COMPUTE_LOG_BUCKET_ENV, "lorechat-dev-processed")
    monkeypatch.setenv("AWS_REGION", "us-east-1")


def test_instance_config_is_valid_for_dagster(task_environment: None) -> None:
    from dagster._config import convert_potential_field, process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_aws.ecs import EcsRunLauncher
    from dagster_postgres import DagsterPostgresStorage

    config, _ = dagster_instance_config(str(INSTANCE_YAML.parent))

    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_aws.ecs", "EcsRunLauncher")
    checked = process_config(
        convert_potential_field(EcsRunLauncher.config_type()).config_type, launcher["config"]
    )
    assert checked.success, checked.errors
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager

    logs = config["compute_logs"]
    assert logs["class"] == "S3ComputeLogManager"
    checked_logs = process_config(
        convert_potential_field(S3ComputeLogManager.config_type()).config_type, logs["config"]
    )
    assert checked_logs.success, checked_logs.errors
    assert f"{checked_logs.value['prefix']}/" == COMPUTE_LOG_PREFIX
    storage = process_config(
        convert_potential_field(DagsterPostgresStorage.config_type()).config_type,
        config["storage"]["postgres"],
    )
    assert storage.success, storage.errors
    assert storage.value["postgres_db"]["params"] == {"sslmode": "require"}


def test_run_launcher_matches_the_task_definitions() -> None:
    launcher = yaml.safe_load(INSTANCE_YAML.read_text())["run_launcher"]["config"]
    assert launcher["container_name"] == RUN_CONTAINER_NAME
    assert launcher["task_definition"] == {"env": RUN_TASK_DEFINITION_ENV}
    assert launcher["use_current_ecs_task_config"] is True
    # Secrets come from the run task definition; no ListSecrets by tag.
    assert launcher["secrets_tag"] is None


def test_credentials_come_from_the_environment_only() -> None:
    database = yaml.safe_load(INSTANCE_YAML.read_text())["storage"]["postgres"]["postgres_db"]
    for key in ("hostname", "port", "db_name", "username", "password"):
        assert set(database[key]) == {"env"}, key
    assert {database[key]["env"] for key in database if key != "params"} == set(POSTGRES_VARIABLES)


def test_the_instance_starts_with_this_queue_monitoring_and_retention(
    tmp_path: Path, task_environment: None
) -> None:
    """Everything but storage and the launcher (which need AWS) on a real DagsterInstance."""
    import dagster as dg

    config = yaml.safe_load(INSTANCE_YAML.read_text())
    del config["storage"], config["run_launcher"], config["compute_logs"]
    # EcsRunLauncher resumes runs; the default launcher standing in for it here cannot.
    config["run_monitoring"]["max_resume_run_attempts"] = 0
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        coordinator = instance.run_coordinator
        assert type(coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 4
        assert instance.run_monitoring_enabled
        assert instance.run_retries_enabled
    finally:
        instance.dispose()


def test_pipeline_image_installs_cpu_torch_first_then_the_project() -> None:
    dockerfile = (REPO_ROOT / PIPELINE_DOCKERFILE).read_text()
    torch = dockerfile.index(
        "pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
    )
    project = dockerfile.index("pip install --no-cache-dir . dagster-postgres==0.29.27")
    assert torch < project
    assert "COPY infra/dagster/dagster.yaml ${DAGSTER_HOME}/dagster.yaml" in dockerfile
    assert re.search(r"^USER dagster$", dockerfile, re.MULTILINE)


def test_every_file_the_images_copy_survives_the_dockerignore() -> None:
    """The allow-list in .dockerignore must keep what both Dockerfiles COPY."""
    allowed = [
        line[1:]
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for dockerfile in (PIPELINE_DOCKERFILE, "serving/Dockerfile"):
        for line in (REPO_ROOT / dockerfile).read_text().splitlines():
            if not line.startswith("COPY ") or "--from=" in line:
                continue  # a COPY --from copies out of another build stage
            sources = [word for word in line.split()[1:-1] if not word.startswith("--")]
            for source in sources:
                assert any(source == a or source.startswith(f"{a}/") for a in allowed), source
