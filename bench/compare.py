"""Benchmarks side by side, one command, one report: `python -m bench [options]`.

1. Ingestion of the same folder by our pipeline, unstructured-ingest and LlamaIndex's
   IngestionPipeline (same model, comparable chunk sizes), beside the raw encode ceiling of the
   model on our chunks: a full run, an unchanged re-run, then a re-run with 10% of the documents
   edited, with a check that each index holds the new text and not the old.
2. Retrieval quality (nDCG@10, recall@100, MRR@10) on a BEIR-format folder, dense / keyword /
   hybrid through `serving.search.search`.
3. Serving: `bench/serve.py` as a subprocess, its JSON included.
4. Scale: build time, memory, query p50/p99 and recall@10 against exact search per size.

Every step runs in a subprocess of its own with a timeout (a crash or timeout becomes a row of
the report); the report is printed as markdown and written as report.json and report.md under
`--output`.
"""

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import random
import re
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.ingest import prepare_source
from bench.ingest_worker import PEER_WORKAROUNDS, normalise
from bench.isolation import REPO, run_isolated
from bench.plots import plotting_unavailable, write_plots
from bench.report import ingestion_rows, render_markdown

PYTHON_DOCS = Path("/work/debian-docs/python3.11-doc/usr/share/doc/python3.11/html/_sources")
POSTGRES_DOCS = Path("/work/debian-docs/postgresql-doc-15/usr/share/doc/postgresql-doc-15/html")
SCIFACT = REPO.parent / "shared" / "data" / "scifact"
SYSTEMS = ("ours", "unstructured", "llamaindex")
PEER_MODULES = {
    "unstructured": ("unstructured_ingest", "pandas"),
    "llamaindex": ("llama_index.core", "llama_index.vector_stores.lancedb", "pandas"),
}
PARTS = ("ingestion", "retrieval", "serving", "scale")
CHANGED_SHARE = 0.10
VERSIONS = (
    "torch",
    "sentence-transformers",
    "transformers",
    "lancedb",
    "pyarrow",
    "unstructured",
    "unstructured-ingest",
    "llama-index-core",
    "llama-index-vector-stores-lancedb",
    "llama-index-embeddings-huggingface",
    "onnxruntime",
    "openvino",
    "dagster",
)


def missing_peer(system: str) -> str | None:
    for module in PEER_MODULES.get(system, ()):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return f"{module} is not installed (pip install -e '.[bench-peers]')"
    return None


# --- ingestion ------------------------------------------------------------------------------

EDIT_LINE = re.compile(r"^[A-Za-z][A-Za-z0-9 ,]{20,70}[a-z0-9][.]?$")


def plan_edits(source: Path, share: float, seed: int = 7) -> list[dict[str, str]]:
    """Pick `share` of the documents and, in each, a plain line found once in the whole corpus:
    the edit replaces it with a sentence carrying a unique marker word."""
    files = sorted(p for p in source.rglob("*") if p.is_file())
    texts = {p: p.read_text(errors="replace") for p in files}
    corpus = normalise("\n".join(texts.values()))
    wanted = max(1, round(len(files) * share))
    edits: list[dict[str, str]] = []
    for path in random.Random(seed).sample(files, len(files)):
        lines = [line.strip() for line in texts[path].splitlines()]
        candidates = [
            line
            for line in lines
            if EDIT_LINE.match(line) and len(line.split()) >= 4 and lines.count(line) == 1
        ]
        for line in candidates:
            if corpus.count(normalise(line)) == 1:
                marker = f"lorechatedit{len(edits):04d}"
                edits.append(
                    {
                        "file": str(path.relative_to(source)),
                        "old": line,
                        "marker": marker,
                        "new": f"Revised for the benchmark as {marker} in this sentence.",
                    }
                )
                break
        if len(edits) == wanted:
            break
    return edits


def apply_edits(source: Path, edits: Sequence[dict[str, str]]) -> None:
    for edit in edits:
        path = source / edit["file"]
        path.write_text(path.read_text(errors="replace").replace(edit["old"], edit["new"], 1))


def stage_sources(folders: Sequence[Path], limit: int | None, work: Path) -> Path:
    """A copy of the first `limit` files of each folder (all without a limit) under
    work/source/<folder name>: the runs edit it, never the originals."""
    source = work / "source"
    shutil.rmtree(source, ignore_errors=True)
    for folder in folders:
        staging = work / "staging"
        shutil.rmtree(staging, ignore_errors=True)
        staged = prepare_source(folder.resolve(), limit, staging)
        shutil.copytree(staged, source / folder.name, dirs_exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    return source


def ingestion(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    source = stage_sources(args.docs, args.limit, work)
    documents = sum(1 for p in source.rglob("*") if p.is_file())
    edits = plan_edits(source, CHANGED_SHARE)
    changes = work / "edits.json"
    changes.write_text(json.dumps(edits, indent=2))
    systems = [s for s in args.systems if s in SYSTEMS]
    skipped = {s: reason for s in systems if (reason := missing_peer(s))}
    runs: list[dict[str, Any]] = []

    # One export cache for every step, warmed before them (see bench/export_step.py).
    export_cache = os.environ.get("LORECHAT_ONNX_CACHE_DIR") or str(work / "onnx-cache")
    env = {"LORECHAT_ONNX_CACHE_DIR": export_cache}
    prepared: dict[str, Any] = {}

    def step(system: str, phase: str, state: str | None = None) -> None:
        print(f"[ingestion] {system}: {phase}", file=sys.stderr, flush=True)
        outcome = run_isolated(
            "bench.ingest_worker",
            [
                system,
                "--source",
                str(source),
                "--state",
                str(work / "state" / (state or system)),
                "--changes",
                str(changes),
            ],
            timeout=args.timeout,
            env=env,
            log=work / "logs" / f"{system}-{phase}.log",
        )
        runs.append({"system": system, "phase": phase, **outcome})

    active = [s for s in systems if s not in skipped]
    if "ours" in active:
        print("[ingestion] ours: the encoder's export", file=sys.stderr, flush=True)
        prepared["ours"] = run_isolated(
            "bench.export_step",
            ["--home", str(work / "state" / "export")],
            timeout=args.timeout,
            env=env,
            log=work / "logs" / "ours-export.log",
        )
    for system in active:
        step(system, "full")
    if "ours" in active and args.ceiling:
        step("ceiling", "full", state="ours")
    if not args.full_only:
        for system in active:
            step(system, "unchanged")
        apply_edits(source, edits)
        for system in active:
            step(system, "changed")
    report = {
        "source": [str(folder) for folder in args.docs],
        "limit": args.limit,
        "documents": documents,
        "edited_documents": len(edits),
        "skipped": skipped,
        "prepared": prepared,
        "runs": runs,
        "workarounds": {s: PEER_WORKAROUNDS[s] for s in active if s in PEER_WORKAROUNDS},
    }
    report["table"] = ingestion_rows(report)
    return report


# --- retrieval, serving, scale -----------------------------------------------------------------


def retrieval(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    arguments = ["--beir", str(args.beir), "--qrels", str(args.qrels)]
    arguments += ["--state", str(work / "retrieval")]
    if args.queries is not None:
        arguments += ["--queries", str(args.queries)]
    if args.corpus_sample is not None:
        arguments += ["--corpus-sample", str(args.corpus_sample)]
    print("[retrieval]", " ".join(arguments), file=sys.stderr, flush=True)
    return run_isolated(
        "bench.retrieval", arguments, timeout=args.timeout, log=work / "logs" / "retrieval.log"
    )


def serving(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    arguments = ["--rows", str(args.serve_rows), "--clients", str(args.serve_clients)]
    arguments += ["--seconds", str(args.serve_seconds)]
    print("[serving] bench/serve.py", " ".join(arguments), file=sys.stderr, flush=True)
    return run_isolated(
        "bench.serve_json",
        arguments,
        timeout=args.timeout,
        log=work / "logs" / "serving.log",
    )


def scale(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    sizes = list(args.scale_sizes)
    if args.scale_1m and 1_000_000 not in sizes:
        sizes.append(1_000_000)
    results = []
    for rows in sizes:
        print(f"[scale] {rows} rows", file=sys.stderr, flush=True)
        outcome = run_isolated(
            "bench.scale",
            ["--rows", str(rows), "--queries", str(args.scale_queries)],
            timeout=args.timeout,
            log=work / "logs" / f"scale-{rows}.log",
        )
        results.append({"rows": rows, **outcome})
    return {"sizes": results}


def machine() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in VERSIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "platform": platform.platform(),
        # The encoders' speed and precision depend on it (bfloat16 only where it is native).
        "cpu_model": cpu_model(),
        "cpu_features": cpu_features(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "versions": versions,
    }


# The instruction sets that set the encode ceiling: OpenVINO's bfloat16 runs on AMX tiles where
# there are some (3.3x the AVX-512 bf16 speed on python3.11-doc), then on AVX-512 bf16.
CPU_FEATURES = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")


def cpu_features() -> list[str]:
    """The `CPU_FEATURES` this CPU has, from /proc/cpuinfo (empty where there is none)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [feature for feature in CPU_FEATURES if feature in flags]
    return []


def cpu_model() -> str | None:
    with contextlib.suppress(OSError):  # no /proc: not Linux
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "compare")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per step")
    group = parser.add_argument_group("ingestion")
    group.add_argument(
        "--docs",
        type=Path,
        nargs="+",
        default=[PYTHON_DOCS, POSTGRES_DOCS],
        help="folders ingested together (../shared/data/fetch-debian-docs.sh /work/debian-docs)",
    )
    group.add_argument("--limit", type=int, default=None, help="first N files of each folder")
    group.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    group.add_argument("--no-ceiling", dest="ceiling", action="store_false")
    group.add_argument("--full-only", action="store_true", help="no re-runs")
    group = parser.add_argument_group("retrieval")
    group.add_argument("--beir", type=Path, default=SCIFACT)
    group.add_argument("--qrels", type=Path, default=None, help="default: BEIR/qrels/train.tsv")
    group.add_argument("--queries", type=int, default=None, help="first N judged queries")
    group.add_argument("--corpus-sample", type=int, default=None, help="with --queries")
    group = parser.add_argument_group("serving (bench/serve.py)")
    group.add_argument("--serve-rows", type=int, default=100_000)
    group.add_argument("--serve-clients", type=int, default=16)
    group.add_argument("--serve-seconds", type=float, default=20.0)
    group = parser.add_argument_group("scale")
    group.add_argument("--scale-sizes", type=int, nargs="+", default=[10_000, 100_000])
    group.add_argument("--scale-1m", action="store_true", help="also 1,000,000 rows (slow)")
    group.add_argument("--scale-queries", type=int, default=200)
    args = parser.parse_args(argv)
    if args.qrels is None:
        args.qrels = args.beir / "qrels" / "train.tsv"
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = args.output / "work"
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "command": "python -m bench " + " ".join(sys.argv[1:]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
    }
    steps = {"ingestion": ingestion, "retrieval": retrieval, "serving": serving, "scale": scale}
    for part in PARTS:
        if part in args.parts:
            report[part] = steps[part](args, work)
            write_report(report, args.output)  # what is done so far survives a later crash
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_report(report, args.output)
    return report


def write_report(report: dict[str, Any], output: Path) -> str:
    plots = write_plots(report, output)
    markdown = render_markdown(report)
    if plots:
        markdown += "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n"
    elif reason := plotting_unavailable():
        # Said, so that a report without plots is not taken for one with nothing to plot.
        markdown += f"\nNo plots: {reason}.\n"
    (output / "report.json").write_text(json.dumps(report, indent=2))
    (output / "report.md").write_text(markdown)
    return markdown


def end_on_sigterm(signum: int, frame: Any) -> None:
    # As Ctrl-C does: the step under way is killed with its whole process tree on the way out.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_arguments(argv)
    signal.signal(signal.SIGTERM, end_on_sigterm)
    print(render_markdown(run(args)))
