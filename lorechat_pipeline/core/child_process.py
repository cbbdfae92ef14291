"""The environment of a child process that must run this very package (`python -m` of one of its
modules): a checkout on `sys.path`, not an installed copy, and never a hub download."""

import os
from pathlib import Path


def package_environment() -> dict[str, str]:
    """This environment, with the folder this package was imported from first on the path."""
    import lorechat_pipeline

    package_root = str(Path(lorechat_pipeline.__file__).resolve().parents[1])
    paths = [package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "HF_HUB_OFFLINE": "1"}
