"""How big the serving container's Python environment is, without building the image.

    .venv/bin/python bench/serving_env_size.py [--requirements serving/requirements.txt]

Resolves the requirements file against this virtualenv (each distribution and, recursively, its
dependencies for the markers of this interpreter), sums the files each installed distribution
records, and prints one JSON object: total MB, the distribution count and the ten largest. Run it
with `--requirements serving/export-requirements.txt` to see what the build stage alone needs.
"""

import argparse
import importlib.metadata
import json
import sys
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def normalized(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def closure(requirements: list[Requirement]) -> dict[str, importlib.metadata.Distribution]:
    found: dict[str, importlib.metadata.Distribution] = {}
    pending = [(requirement, "") for requirement in requirements]
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = normalized(requirement.name)
        try:
            distribution = importlib.metadata.distribution(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            print(f"not installed here: {requirement.name}", file=sys.stderr)
            continue
        wanted_extras = set(requirement.extras)
        if name in found and not wanted_extras:
            continue
        found[name] = distribution
        for raw in distribution.requires or []:
            dependency = Requirement(raw)
            extras = wanted_extras or {""}
            pending += [(dependency, extra) for extra in extras]
    return found


def installed_bytes(distribution: importlib.metadata.Distribution) -> int:
    total = 0
    for file in distribution.files or []:
        path = Path(str(distribution.locate_file(file)))
        if path.is_file():
            total += path.stat().st_size
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requirements", default=str(REPO / "serving" / "requirements.txt"))
    args = parser.parse_args()
    requirements_file = Path(args.requirements).resolve()
    lines = requirements_file.read_text().splitlines()
    requirements = [Requirement(line) for line in lines if line.strip() and line[0] != "#"]
    sizes = {name: installed_bytes(dist) for name, dist in closure(requirements).items()}
    largest = sorted(sizes.items(), key=lambda item: -item[1])[:10]
    print(
        json.dumps(
            {
                "requirements": str(requirements_file.relative_to(REPO)),
                "distributions": len(sizes),
                "total_mb": round(sum(sizes.values()) / 1e6, 1),
                "largest_mb": {name: round(size / 1e6, 1) for name, size in largest},
                "includes_torch": "torch" in sizes,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
