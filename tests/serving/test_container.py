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
# through it), uvicorn's reloader and anyio's sniffio probe; the app works without them.
OPTIONAL_IMPORTS = {"pandas", "pytz", "watchfiles", "sniffio"}
PROBE = """
import json, sys
import serving.app, serving.server, serving.__main__
print(json.dumps({name: getattr(module, "__file__", None) for name, module in sys.modules.items()}))
"""


def loaded_modules() -> dict[str, str | None]:
    """Module name → file, for everything importing the app loads."""
    output = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    modules: dict[str, str | None] = json.loads(output)
    return modules


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
    dockerfile = (SERVING / "Dockerfile").read_text()
    copied = set(re.findall(r"lorechat_pipeline/[\w/]+\.py", dockerfile))
    needed = {
        Path(path).resolve().relative_to(REPO_ROOT).as_posix()
        for name, path in loaded_modules().items()
        if name.startswith("lorechat_pipeline") and path
    }
    assert needed
    assert needed <= copied, f"the image lacks {sorted(needed - copied)}"
    assert 'CMD ["python", "-m", "serving"]' in dockerfile
