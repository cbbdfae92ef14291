"""The side-by-side report: derived figures (throughput, ratios, correctness) from the raw step
outcomes, and the markdown rendering printed and written by `python -m bench`."""

from collections.abc import Sequence
from typing import Any

LABELS = {
    "ours": "LoreChat pipeline",
    "unstructured": "unstructured-ingest",
    "llamaindex": "LlamaIndex IngestionPipeline",
    "ceiling": "encode ceiling (our chunks)",
}


def ingestion_rows(ingestion: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per system and phase: docs, chunks, wall/CPU seconds, chunks/s, peak RSS, ratio to
    the ceiling (full runs) or to the system's own full run (re-runs), and correctness."""
    runs = ingestion.get("runs", [])
    full = {r["system"]: r for r in runs if r["phase"] == "full" and "result" in r}
    ceiling = full.get("ceiling")
    ceiling_rate = None
    if ceiling and ceiling["result"]["wall_seconds"] > 0:
        ceiling_rate = ceiling["result"]["index_rows"] / ceiling["result"]["wall_seconds"]
    rows = []
    for run in runs:
        row: dict[str, Any] = {
            "system": run["system"],
            "phase": run["phase"],
            "peak_rss_mb": run.get("peak_rss_mb"),
            "peak_tree_rss_mb": run.get("peak_tree_rss_mb"),
        }
        if "error" in run:
            row["error"] = run["error"]
        result = run.get("result")
        if result is None:
            rows.append(row)
            continue
        wall = result["wall_seconds"]
        row.update(
            documents=result.get("index_documents"),
            chunks=result["index_rows"],
            characters_per_chunk=result["characters_per_chunk"],
            wall_seconds=wall,
            cpu_seconds=result["cpu_seconds"],
        )
        if run["phase"] == "full":
            rate = result["index_rows"] / wall if wall > 0 else None
            row["chunks_per_second"] = round(rate, 2) if rate else None
            if rate and ceiling_rate:
                row["ratio_to_ceiling"] = round(rate / ceiling_rate, 3)
        elif run["system"] in full and full[run["system"]]["result"]["wall_seconds"] > 0:
            row["ratio_to_full_run"] = round(
                wall / full[run["system"]]["result"]["wall_seconds"], 4
            )
        correctness = result.get("correctness")
        if correctness and run["system"] != "ceiling":
            row["correctness"] = correctness
            if run["phase"] == "changed":
                edited = correctness["edited"]
                row["correct"] = (
                    correctness["new_text_found"] == edited and correctness["old_text_found"] == 0
                )
        rows.append(row)
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def preparation_note(outcome: dict[str, Any]) -> str:
    """What was made before the steps, outside their clock and memory figures."""
    if "error" in outcome:
        return f"the encoder's ONNX export before the steps failed: {outcome['error']}"
    return (
        f"the encoder's ONNX export, made before the steps into the cache they share "
        f"({outcome['process_wall_seconds']:.1f} s, peak RSS {_cell(outcome['peak_rss_mb'])} MB; "
        "a warm cache takes no time)"
    )


def correctness_cell(row: dict[str, Any]) -> str:
    check = row.get("correctness")
    if not check:
        return ""
    text = f"new {check['new_text_found']}/{check['edited']}, old {check['old_text_found']}"
    if "correct" in row:
        text = ("✅ " if row["correct"] else "❌ ") + text
    return text


def render_ingestion(ingestion: dict[str, Any]) -> list[str]:
    lines = [
        "## Ingestion",
        "",
        f"Source: {', '.join(ingestion['source'])} (limit {ingestion['limit']}): "
        f"{ingestion['documents']} documents, {ingestion['edited_documents']} edited for the "
        "changed re-run.",
        "",
    ]
    rows = ingestion_rows(ingestion)
    body = []
    for row in rows:
        ratio = row.get("ratio_to_ceiling", row.get("ratio_to_full_run"))
        body.append(
            [
                LABELS.get(row["system"], row["system"]),
                row["phase"],
                row.get("documents"),
                row.get("chunks"),
                row.get("characters_per_chunk"),
                row.get("wall_seconds"),
                row.get("cpu_seconds"),
                row.get("chunks_per_second"),
                row.get("peak_rss_mb"),
                row.get("peak_tree_rss_mb"),
                # Three decimals: the ceiling target is 0.8, and 0.797 must not print as 0.80.
                None if ratio is None else f"{ratio:.3f}",
                row.get("error") or correctness_cell(row),
            ]
        )
    header = [
        "system",
        "phase",
        "docs in index",
        "chunks in index",
        "chars/chunk",
        "wall s",
        "CPU s",
        "chunks/s",
        "peak RSS MB, largest process",
        "peak RSS MB, whole tree",
        "ratio (full: to ceiling; re-run: to own full)",
        "check / error",
    ]
    lines += _table(header, body)
    lines += [
        "",
        "Check: after the full run, how many edited lines' old text the index holds (baseline); "
        "after the changed re-run, the marker of each edit must be found and no old text.",
    ]
    for system, outcome in ingestion.get("prepared", {}).items():
        lines.append(f"- {LABELS.get(system, system)}: {preparation_note(outcome)}")
    for system, reason in ingestion.get("skipped", {}).items():
        lines.append(f"- {LABELS.get(system, system)} skipped: {reason}")
    for system, workarounds in ingestion.get("workarounds", {}).items():
        lines += ["", f"Workarounds applied to {LABELS.get(system, system)} (in the harness):"]
        lines += [f"- {w}" for w in workarounds]
    return [*lines, ""]


def render_retrieval(retrieval: dict[str, Any]) -> list[str]:
    lines = ["## Retrieval quality", ""]
    if "error" in retrieval:
        lines += [f"Failed: {retrieval['error']}", ""]
    result = retrieval.get("result")
    if not result:
        return lines
    lines += [
        f"Dataset {result['dataset']}, judgments {result['qrels']}: "
        f"{result['corpus_documents']} documents, {result['index_rows']} chunks "
        f"(ingested in {result['ingest_seconds']} s), query encoder {result['query_encoder']}.",
        "",
    ]
    body = [
        [mode, m["queries"], m["ndcg@10"], m["recall@100"], m["mrr@10"], m["ms_per_query"]]
        for mode, m in result["modes"].items()
    ]
    lines += _table(["mode", "queries", "nDCG@10", "recall@100", "MRR@10", "ms/query"], body)
    return [*lines, ""]


def render_serving(serving: dict[str, Any]) -> list[str]:
    lines = ["## Serving (bench/serve.py)", ""]
    if "error" in serving:
        lines += [f"Failed: {serving['error']}", ""]
    result = serving.get("result")
    if not result:
        return lines
    lines.append(
        f"{result['rows']:,} rows, {result['clients']} clients, "
        f"{result['seconds_per_mode']} s per mode, query encoder {result['query_encoder']}, "
        f"{result.get('workers', 1)} server process(es)."
    )
    lines.append("")
    body = []
    for load, label in serving_loads(result):
        for mode, figures in result[load].items():
            body.append(
                [
                    label,
                    mode,
                    figures["requests_per_second"],
                    figures["p50_ms"],
                    figures["p95_ms"],
                    figures["p99_ms"],
                    figures["errors"],
                ]
            )
    lines += _table(["load", "mode", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors"], body)
    lines += [
        "",
        "One client: latency on an idle server. Two clients: latency and throughput together "
        "(the targets' operating point on two cores). More clients: capacity, where latency "
        "is mostly queueing.",
    ]
    floor = result.get("in_process_floor")
    if floor:
        searches = floor["search_without_encode"]
        lines += [
            "",
            "In-process floor, no HTTP (p50 / p99 ms): query encoding "
            f"{floor['query_encode']['p50_ms']} / {floor['query_encode']['p99_ms']}; dense search "
            f"from the in-memory copy {searches['dense_resident']['p50_ms']} / "
            f"{searches['dense_resident']['p99_ms']} (recall@10 against exact search "
            f"{floor['resident_recall_at_10']}), on LanceDB {searches['dense_lancedb']['p50_ms']} "
            f"/ {searches['dense_lancedb']['p99_ms']}; hybrid {searches['hybrid']['p50_ms']} / "
            f"{searches['hybrid']['p99_ms']}.",
        ]
    return [*lines, ""]


def render_scale(scale: dict[str, Any]) -> list[str]:
    """LanceDB's index and the serving container's in-memory copy side by side: serving
    searches the copy when the version fits LORECHAT_RESIDENT_VECTORS_MB, LanceDB otherwise."""
    lines = ["## Scale (synthetic clustered vectors, serving's dense search)", ""]
    body = []
    for size in scale.get("sizes", []):
        result = size.get("result") or {}
        copy = result.get("resident_copy") or {}
        body.append(
            [
                size["rows"],
                "IVF_FLAT" if result.get("ann_index") else ("exact" if result else None),
                result.get("build_seconds"),
                result.get("index_mb_on_disk"),
                size.get("peak_rss_mb"),
                result.get("query_p50_ms"),
                result.get("query_p99_ms"),
                result.get("recall_at_10"),
                copy.get("mb"),
                _probed(copy),
                copy.get("query_p50_ms"),
                copy.get("query_p99_ms"),
                copy.get("recall_at_10"),
                size.get("error", ""),
            ]
        )
    header = [
        "rows",
        "LanceDB index",
        "build s",
        "on disk MB",
        "peak RSS MB",
        "p50 ms",
        "p99 ms",
        "recall@10",
        "in-memory copy MB",
        "lists probed",
        "copy p50 ms",
        "copy p99 ms",
        "copy recall@10",
        "error",
    ]
    lines += _table(header, body)
    return [*lines, ""]


def _probed(copy: dict[str, Any]) -> str | None:
    if "probed" not in copy:
        return None
    return f"{copy['probed']} of {copy['lists']}"


def render_markdown(report: dict[str, Any]) -> str:
    machine = report.get("machine", {})
    load = machine.get("load_average_at_start")
    versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items() if v)
    features = ", ".join(machine.get("cpu_features") or [])
    features = f" ({features})" if features else ""
    lines = [
        "# Benchmarks side by side",
        "",
        f"`{report.get('command', 'python -m bench')}` — {report.get('started')} to "
        f"{report.get('finished')}",
        "",
        f"Machine: {machine.get('platform')}, {machine.get('cpu_model') or 'CPU model unknown'}, "
        f"Python {machine.get('python')}, {machine.get('cpus')} CPUs{features}, "
        f"load average at start {load}.",
        f"Versions: {versions}.",
        "",
    ]
    if "ingestion" in report:
        lines += render_ingestion(report["ingestion"])
    if "retrieval" in report:
        lines += render_retrieval(report["retrieval"])
    if "serving" in report:
        lines += render_serving(report["serving"])
    if "scale" in report:
        lines += render_scale(report["scale"])
    return "\n".join(lines)


def serving_loads(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The serving report's load levels present in `result`, each with its label."""
    loads = [
        ("http_one_client", "1 client"),
        ("http_two_clients", "2 clients"),
        ("http", f"{result.get('clients')} clients"),
    ]
    return [(load, label) for load, label in loads if load in result]
