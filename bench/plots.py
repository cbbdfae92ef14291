"""PNG plots of the side-by-side report: ingestion throughput bars, serving latency percentiles
and scaling curves. matplotlib comes with the bench-peers group; without it, no plots."""

from pathlib import Path
from typing import Any

from bench.report import LABELS, ingestion_rows, serving_loads


def plotting_unavailable() -> str | None:
    """Why no plots can be drawn here, or None when they can."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "matplotlib is not installed (`make bench-setup` installs it with the peers)"
    return None


def write_plots(report: dict[str, Any], folder: Path) -> list[Path]:
    if plotting_unavailable():
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []

    rows = [
        r
        for r in ingestion_rows(report.get("ingestion", {}))
        if r["phase"] == "full" and r.get("chunks_per_second")
    ]
    if rows:
        figure, axis = plt.subplots(figsize=(7, 3.5))
        names = [LABELS.get(r["system"], r["system"]) for r in rows]
        axis.barh(names, [r["chunks_per_second"] for r in rows], color="#4c72b0")
        axis.set_xlabel("chunks/s (full run)")
        axis.invert_yaxis()
        written.append(save(figure, folder / "ingestion-throughput.png"))

    serving = (report.get("serving") or {}).get("result") or {}
    bars = [
        (f"{label} {mode}", figures)
        for load, label in serving_loads(serving)
        for mode, figures in serving[load].items()
    ]
    if bars:
        figure, axis = plt.subplots(figsize=(7, 3.5))
        width = 0.25
        for offset, key in enumerate(("p50_ms", "p95_ms", "p99_ms")):
            axis.bar(
                [n + (offset - 1) * width for n in range(len(bars))],
                [figures[key] for _, figures in bars],
                width,
                label=key.removesuffix("_ms"),
            )
        axis.set_xticks(range(len(bars)), [label for label, _ in bars], fontsize=8)
        axis.set_ylabel("ms")
        axis.set_title(f"search over HTTP, {serving['rows']:,} rows")
        axis.legend()
        written.append(save(figure, folder / "serving-latency.png"))

    sizes = [s for s in (report.get("scale") or {}).get("sizes", []) if s.get("result")]
    if sizes:
        figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
        rows_axis = [s["rows"] for s in sizes]
        left.plot(rows_axis, [s["result"]["query_p50_ms"] for s in sizes], "o-", label="p50")
        left.plot(rows_axis, [s["result"]["query_p99_ms"] for s in sizes], "o-", label="p99")
        left.set_xscale("log")
        left.set_xlabel("rows")
        left.set_ylabel("query ms")
        left.legend()
        right.plot(rows_axis, [s["result"]["build_seconds"] for s in sizes], "o-", label="build s")
        peaks = [(s["peak_rss_mb"] or 0) / 1000 for s in sizes]
        right.plot(rows_axis, peaks, "o-", label="peak RSS GB")
        right.set_xscale("log")
        right.set_xlabel("rows")
        right.legend()
        written.append(save(figure, folder / "scale.png"))
    return written


def save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path
