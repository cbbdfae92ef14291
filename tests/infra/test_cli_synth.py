"""`npx cdk synth` through the pinned CLI (infra/package-lock.json), offline, then cfn-lint over
every synthesized template: the CLI's assembly and the prod and cross-region ones."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.conftest import INFRA, Synthesized

STACKS = ("Network", "Data", "Edge", "Pipeline", "Serving", "Monitoring")
CFN_LINT = str(Path(sys.executable).with_name("cfn-lint"))
NEVER_STAGED = (".venv", ".git", "node_modules", "cdk.out", "__pycache__", ".lorechat", "tests")


@pytest.fixture(scope="session")
def cli_assembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cli = INFRA / "node_modules" / ".bin" / "cdk"
    if not cli.exists():
        pytest.fail("the pinned CDK CLI is missing: run `make setup` (npm ci --prefix infra)")
    outdir = tmp_path_factory.mktemp("cdk-cli")
    environment = {
        **os.environ,
        "CI": "true",
        # No AWS here: never wait on the instance metadata service for credentials.
        "AWS_EC2_METADATA_DISABLED": "true",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "1",
    }
    result = subprocess.run(
        ["npx", "--no-install", "cdk", "synth", "--quiet", "--output", str(outdir)],
        cwd=INFRA,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return outdir


def test_cli_synthesizes_every_dev_stack(cli_assembly: Path) -> None:
    manifest = json.loads((cli_assembly / "manifest.json").read_text())
    stacks = {
        name
        for name, artifact in manifest["artifacts"].items()
        if artifact["type"] == "aws:cloudformation:stack"
    }
    assert stacks == {f"LoreChat-dev-{unit}" for unit in STACKS}
    version = subprocess.run(
        ["npx", "--no-install", "cdk", "--version"],
        cwd=INFRA,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert version.startswith("2.1148.1")


def test_staged_images_carry_only_their_build_context(cli_assembly: Path) -> None:
    docker_assets = []
    for assets_file in cli_assembly.glob("*.assets.json"):
        for image in json.loads(assets_file.read_text()).get("dockerImages", {}).values():
            docker_assets.append(cli_assembly / image["source"]["directory"])
    assert len({path.name for path in docker_assets}) == 2  # pipeline and serving
    for directory in docker_assets:
        names = {path.name for path in directory.rglob("*")}
        assert not names & set(NEVER_STAGED), names & set(NEVER_STAGED)
        size = sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())
        assert size < 20 * 1024 * 1024, f"{directory.name} stages {size} bytes"
        assert (directory / "pyproject.toml").exists()
        assert (directory / "lorechat_pipeline").is_dir()


def test_cfn_lint_finds_no_error_in_any_template(
    cli_assembly: Path, prod: Synthesized, abroad: Synthesized
) -> None:
    templates = [
        *cli_assembly.glob("*.template.json"),
        *prod.outdir.glob("*.template.json"),
        *abroad.outdir.glob("*.template.json"),
    ]
    assert len(templates) == 3 * len(STACKS)
    result = subprocess.run(
        [CFN_LINT, "--format", "json", "--", *map(str, templates)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    matches = json.loads(result.stdout or "[]")
    errors = [
        f"{Path(match['Filename']).name}: {match['Rule']['Id']} {match['Message']}"
        for match in matches
        if match["Level"] == "Error"
    ]
    assert errors == [], "\n".join(errors)
    assert result.returncode in (0, 4, 8, 12), result.stderr  # warnings/informational only
