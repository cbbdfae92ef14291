"""Parse CPU of one process: parse and chunk a folder's documents, as a parser worker does.

    .venv/bin/python bench/parse_cpu.py FOLDER [--limit N] [--every K] [--output CHUNKS.json]

Prints the CPU seconds spent parsing and chunking (after the model is loaded and one document has
warmed the partitioner up), the documents and chunks, and how many texts spaCy segmented into
sentences and tagged, with their tokens: the element classifier's share of parsing. `--output`
writes every chunk (text, title, element types) so that two commits' outputs can be compared
byte for byte (`cmp`), run each from its own checkout with `PYTHONPATH=CHECKOUT`.
"""

import argparse
import contextlib
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DOCUMENT_SUFFIXES = {".txt", ".html", ".htm", ".md", ".rst", ".pdf", ".docx", ".pptx", ".eml"}


def documents(folder: Path, every: int, limit: int | None) -> list[Path]:
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in DOCUMENT_SUFFIXES)
    return found[::every][:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--limit", type=int, default=None, help="at most N documents")
    parser.add_argument("--every", type=int, default=1, help="every K-th document, sorted by path")
    parser.add_argument("--output", type=Path, default=None, help="chunks as JSON, for parity")
    args = parser.parse_args()

    from lorechat_pipeline.core.parsing import offline_nlp
    from lorechat_pipeline.core.parsing.errors import DocumentRejected
    from lorechat_pipeline.core.parsing.partition import ChunkingOptions, parse_and_chunk

    paths = documents(args.folder, args.every, args.limit)
    if not paths:
        raise SystemExit(f"no documents under {args.folder}")
    options = ChunkingOptions()
    offline_nlp.warm_up()
    with contextlib.suppress(DocumentRejected):
        parse_and_chunk(paths[0].read_bytes(), paths[0].name, options)

    annotated: Counter[str] = Counter()

    def counting(annotate: Any, name: str) -> Any:
        def annotating(docs: list[Any]) -> None:
            annotated[f"{name} texts"] += len(docs)
            annotated[f"{name} tokens"] += sum(len(doc) for doc in docs)
            annotate(docs)

        return annotating

    for name, label in (("_segment", "segmented"), ("_tag", "tagged")):
        if hasattr(offline_nlp, name):  # an older checkout may annotate some other way
            setattr(offline_nlp, name, counting(getattr(offline_nlp, name), label))

    chunks: list[list[Any]] = []
    rejected = 0
    started = time.process_time()
    for path in paths:
        try:
            parsed = parse_and_chunk(path.read_bytes(), path.name, options)
        except DocumentRejected:
            rejected += 1
            continue
        chunks.append([[c.text, c.title, list(c.element_types)] for c in parsed])
    cpu = time.process_time() - started

    print(f"documents {len(paths)} (rejected {rejected}), chunks {sum(map(len, chunks))}")
    print(f"parse CPU {cpu:.2f} s ({cpu / len(paths) * 1000:.1f} ms per document)")
    print(", ".join(f"{name} {count}" for name, count in sorted(annotated.items())))
    if args.output:
        args.output.write_text(json.dumps(chunks))


if __name__ == "__main__":
    main()
