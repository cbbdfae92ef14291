"""The ONNX export our pipeline's encoder needs, made before the ingestion steps:
`python -m bench.export_step --home DIR --out FILE`, with LORECHAT_ONNX_CACHE_DIR set to the
cache the steps share. A one-off artifact build (torch tracing the model), like a peer's model
download: the steps' timing and memory then start from a warm cache, as a deployment's do."""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from lorechat_pipeline.defs.resources import embedder_resource
    from lorechat_pipeline.settings import load_settings

    started = time.perf_counter()
    # Exports into the cache when it has no whole export; the encoder process is not started.
    embedder = embedder_resource(load_settings(home=args.home)).get_embedder()
    folder = getattr(embedder, "folder", None)
    args.out.write_text(
        json.dumps(
            {
                "seconds": round(time.perf_counter() - started, 2),
                "export_folder": None if folder is None else str(folder),
            }
        )
    )


if __name__ == "__main__":
    main()
