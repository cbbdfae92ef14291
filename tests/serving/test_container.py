"""The serving image installs serving/requirements.txt and copies a list of modules: both must
cover everything the app imports, or the container fails where the tests pass."""

import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

from tests.conftest import REPO_ROOT

SERVING = REPO_ROOT / "serving"
# Imported only because they are installed here: lancedb's optional pandas support (and pytz
# through it), uvicorn's reloader, anyio's sniffio probe, pyarrow's cloudpickle support and
# httpx's command line (rich, pygments); the app works without them.
OPTIONAL_IMPORTS = {"pandas", "pytz", "watchfiles", "sniffio", "cloudpickle", "rich", "pygments"}
PROBE = """
import json, sys
{imports}
files = {{name: getattr(module, "__file__", None) for name, module in sys.modules.items()}}
print(json.dumps(files))
"""
APP_IMPORTS = "import serving.app, serving.server, serving.__main__"
EXPORT_IMPORTS = "import lorechat_pipeline.core.onnx_embedding"


def loaded_modules(imports: str = APP_IMPORTS) -> dict[str, str | None]:
    """Module name → file, for everything these imports load."""
    output = subprocess.run(
        [sys.executable, "-c", PROBE.format(imports=imports)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    modules: dict[str, str | None] = json.loads(output)
    return modules


def dockerfile_stages() -> dict[str, str]:
    """Stage name → its instructions."""
    stages: dict[str, str] = {}
    for block in re.split(r"^FROM ", (SERVING / "Dockerfile").read_text(), flags=re.M)[1:]:
        header, _, body = block.partition("\n")
        stages[header.split(" AS ")[-1].strip()] = body
    return stages


def copied_modules(stage: str) -> set[str]:
    return set(re.findall(r"lorechat_pipeline/[\w/]+\.py", dockerfile_stages()[stage]))


def pipeline_modules(imports: str) -> set[str]:
    return {
        Path(path).resolve().relative_to(REPO_ROOT).as_posix()
        for name, path in loaded_modules(imports).items()
        if name.startswith("lorechat_pipeline") and path
    }


def requirement_closure(names: list[str]) -> set[str]:
    """The distributions the requirements install, with their own dependencies."""
    seen: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for raw in requires:
            requirement = Requirement(raw)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return seen


def test_requirements_cover_every_third_party_import() -> None:
    listed = [
        Requirement(line).name
        for line in (SERVING / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    installed = requirement_closure(listed)
    distributions = importlib.metadata.packages_distributions()
    missing = set()
    for module in loaded_modules():
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top in OPTIONAL_IMPORTS:
            continue
        if top in ("serving", "lorechat_pipeline", "_distutils_hack"):
            continue
        owners = {d.lower().replace("_", "-") for d in distributions.get(top, [])}
        if owners and not owners & installed:
            missing.add(f"{top} ({', '.join(sorted(owners))})")
    assert not missing, f"imported but not in serving/requirements.txt: {sorted(missing)}"
    assert "dagster" not in installed
    assert "unstructured" not in installed


def test_dockerfile_copies_every_pipeline_module_the_app_imports() -> None:
    needed = pipeline_modules(APP_IMPORTS)
    assert needed
    copied = copied_modules("base")
    assert needed <= copied, f"the image lacks {sorted(needed - copied)}"
    assert 'CMD ["python", "-m", "serving"]' in dockerfile_stages()["base"]


def test_torch_stays_in_the_build_stage_that_exports_the_query_encoder() -> None:
    stages = dockerfile_stages()
    assert list(stages) == ["query-encoder", "base"]
    listed = [
        Requirement(line).name
        for line in (SERVING / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert "torch" not in requirement_closure(listed)
    assert "torch" not in stages["base"]
    # The served image runs the export the first stage made, never exports itself.
    assert "COPY --from=query-encoder /query-encoder /app/query-encoder" in stages["base"]
    assert "LORECHAT_QUERY_ENCODER_DIR=/app/query-encoder" in stages["base"]
    export = pipeline_modules(EXPORT_IMPORTS)
    assert export <= copied_modules("query-encoder"), sorted(
        export - copied_modules("query-encoder")
    )
    assert (
        "python -m lorechat_pipeline.core.onnx_embedding /query-encoder" in stages["query-encoder"]
    )
