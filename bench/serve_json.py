"""Run `bench/serve.py` unchanged as a subprocess and keep the JSON it prints last:
`python -m bench.serve_json [serve.py options] --out FILE`."""

import json
import subprocess
import sys
from pathlib import Path

from bench.isolation import REPO


def last_json(stdout: str) -> dict:
    lines = stdout.splitlines()
    start = max(number for number, line in enumerate(lines) if line == "{")
    return json.loads("\n".join(lines[start:]))


def main() -> None:
    arguments = sys.argv[1:]
    out = Path(arguments[arguments.index("--out") + 1])
    del arguments[arguments.index("--out") : arguments.index("--out") + 2]
    finished = subprocess.run(
        [sys.executable, str(REPO / "bench" / "serve.py"), *arguments],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    out.write_text(json.dumps(last_json(finished.stdout), indent=2))


if __name__ == "__main__":
    main()
