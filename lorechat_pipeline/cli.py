"""`lorechat`: ingest, search and inspect the index without opening the Dagster UI."""

import json
import logging
import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lorechat_pipeline.core.backends.upstash_client import UpstashError
from lorechat_pipeline.core.bedrock_embedding import EmbeddingFailed
from lorechat_pipeline.core.ids import SHARD_COUNT, shard_names
from lorechat_pipeline.core.manifest import ManifestMismatch
from lorechat_pipeline.core.stages.observation import load_catalog
from lorechat_pipeline.core.vector_index import IndexNotFound
from lorechat_pipeline.instance import open_instance, prepare_instance
from lorechat_pipeline.runner import IngestFailed, Pipeline
from lorechat_pipeline.settings import load_settings

app = typer.Typer(
    help="LoreChat Pipeline: keep a vector index in step with a folder or S3 bucket of documents.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)

SourceArgument = Annotated[
    str | None,
    typer.Argument(
        help="A folder path or s3://bucket/prefix (default: $LORECHAT_SOURCE, "
        "else $LORECHAT_HOME/inbox)."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
# What a command reports as one line instead of a traceback: a missing or mismatched index, and
# a hosted backend refusing or failing (the messages name the setting to fix, never a secret).
EXPECTED_ERRORS = (IngestFailed, IndexNotFound, ManifestMismatch, UpstashError, EmbeddingFailed)


def _pipeline(source: str | None = None) -> Pipeline:
    overrides: dict[str, Any] = {}
    if source:
        overrides["source"] = source if source.startswith("s3://") else os.path.abspath(source)
    return Pipeline.from_settings(load_settings(**overrides))


def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, indent=None, default=str) + "\n")


def _quiet_dagster() -> None:
    # The CLI prints its own progress; Dagster's per-event log lines would bury it.
    logging.getLogger("dagster").setLevel(logging.WARNING)


ConfirmDeletionsOption = Annotated[
    bool,
    typer.Option(
        "--confirm-deletions",
        help="Let deletions past the deletion guard through (the documents really are gone).",
    ),
]


@app.command()
def ingest(
    source: SourceArgument = None,
    as_json: JsonOption = False,
    confirm_deletions: ConfirmDeletionsOption = False,
) -> None:
    """Run the asset graph for whatever changed in SOURCE since the last run.

    When the embedding model or chunker changed, the run builds a new index version and promotes
    it once its checks pass; searches read the current version until then."""
    _quiet_dagster()
    pipeline = _pipeline(source)
    try:
        plan = pipeline.plan()
        with Progress(
            TextColumn("[bold]ingesting[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=as_json or not console.is_terminal,
        ) as progress:
            task = progress.add_task(pipeline.settings.source_uri, total=len(plan.to_run))
            summary = pipeline.ingest(
                on_shard_done=lambda _: progress.advance(task),
                confirm_deletions=confirm_deletions,
            )
    except EXPECTED_ERRORS as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from error
    if as_json:
        _emit(summary.as_json())
        return
    documents = summary.as_json()["documents"]
    console.print(
        f"documents: {documents['new']} new, {documents['changed']} changed, "
        f"{documents['unchanged']} unchanged, {documents['deleted']} deleted, "
        f"{documents['quarantined']} quarantined"
    )
    console.print(
        f"chunks: {summary.chunks_written} written, {summary.chunks_deleted} deleted "
        f"in {summary.seconds:.1f} s ({len(summary.shards_run)} of {SHARD_COUNT} shards ran)"
    )
    if summary.quarantined:
        console.print("see `lorechat status` for the quarantined documents and their reasons")
    if summary.promotion and summary.promotion.promoted:
        console.print(f"index version {summary.promotion.candidate} promoted")
    elif summary.promotion:
        console.print(
            f"[yellow]index version {summary.promotion.candidate} not promoted:[/] "
            f"{summary.promotion.refused}; searches keep reading {summary.promotion.previous}"
        )


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="Number of hits.")] = 5,
    as_json: JsonOption = False,
) -> None:
    """Search the current index version (dense retrieval with the configured embedding model)."""
    if not query.strip():
        console.print("[red]error:[/] the query is empty")
        raise typer.Exit(2)
    pipeline = _pipeline()
    try:
        index = pipeline.open_current_index()
        hits = index.search(pipeline.embedder.embed_query(query), k=k)
    except EXPECTED_ERRORS as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from error
    if as_json:
        _emit(
            {
                "hits": [
                    {
                        "chunk_id": hit.chunk_id,
                        "document": hit.document,
                        "score": round(hit.score, 6),
                        "text": hit.text,
                        "title": hit.row.get("title"),
                        "page_number": hit.row.get("page_number"),
                    }
                    for hit in hits
                ]
            }
        )
        return
    for rank, hit in enumerate(hits, 1):
        page = f" p.{hit.row['page_number']}" if hit.row.get("page_number") else ""
        console.print(f"[bold]{rank}. {hit.document}{page}[/]  score {hit.score:.3f}")
        console.print("   " + hit.text[:300].replace("\n", " "))


@app.command()
def status(as_json: JsonOption = False) -> None:
    """The index manifest, document and chunk counts, and the quarantined documents."""
    pipeline = _pipeline()
    processed = pipeline.processed
    documents = sum(len(load_catalog(processed, shard)) for shard in shard_names(SHARD_COUNT))
    quarantine = pipeline.quarantine()
    index_info: dict[str, Any]
    chunks = 0
    try:
        alias = pipeline.vector_store.aliases().read()
        index = pipeline.open_current_index()
        chunks = index.count()
        index_info = {
            "backend": pipeline.settings.backends.vector_store.value,
            "uri": pipeline.vector_store.location,
            "table": index.name,
            "manifest": json.loads(index.manifest.to_json()),
            "promoted_at": alias.promoted_at if alias else None,
            "configured_table": pipeline.vector_store.target_table(pipeline.manifest),
            "retired": [v.table for v in alias.retired] if alias else [],
        }
    except EXPECTED_ERRORS as error:
        index_info = {
            "backend": pipeline.settings.backends.vector_store.value,
            "uri": _location(pipeline),
            "error": str(error),
        }
    payload = {
        "source": pipeline.settings.source_uri,
        "processed": pipeline.settings.processed_uri,
        "index": index_info,
        "documents": documents,
        "chunks": chunks,
        "quarantined": [
            {"document": e.document, "reason": e.reason, "detail": e.detail} for e in quarantine
        ],
    }
    if as_json:
        _emit(payload)
        return
    console.print(f"source:    {payload['source']}")
    console.print(f"index:     {index_info.get('uri')} / {index_info.get('table', '-')}")
    if "manifest" in index_info:
        manifest = index_info["manifest"]
        console.print(
            f"model:     {manifest['embedding_model']} ({manifest['embedding_dimension']}-d, "
            f"{manifest['metric']})\nchunker:   {manifest['chunker_description']}"
        )
    else:
        console.print(f"[yellow]{index_info['error']}[/]")
    if index_info.get("configured_table") not in (None, index_info.get("table")):
        console.print(
            f"[yellow]the configuration builds {index_info['configured_table']}, not yet "
            "promoted[/]"
        )
    console.print(f"documents: {documents}   chunks: {chunks}   quarantined: {len(quarantine)}")
    if quarantine:
        table = Table("document", "reason", "detail", title="quarantine")
        for entry in quarantine:
            table.add_row(entry.document, entry.reason or "", (entry.detail or "")[:120])
        console.print(table)


def _location(pipeline: Pipeline) -> str:
    try:
        return pipeline.vector_store.location
    except EXPECTED_ERRORS:  # Upstash credentials not resolved: the error says which
        return pipeline.settings.upstash_vector_rest_url or "Upstash Vector"


@app.command()
def dev(
    host: Annotated[str, typer.Option(help="Interface the UI listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the UI.")] = 3000,
) -> None:
    """Start the Dagster UI and daemon on the local default: drop files into the source folder
    and watch the sensor turn them into index rows."""
    settings = load_settings()
    home = prepare_instance(settings)
    # Pool limits live in the instance's storage; set them before the daemon's first dequeue.
    open_instance(settings).dispose()
    source = settings.source_uri
    if not source.startswith("s3://"):
        os.makedirs(source, exist_ok=True)
    console.print(f"watching {source}; Dagster UI on http://{host}:{port}")
    env = {**os.environ, "DAGSTER_HOME": str(home), "LORECHAT_HOME": str(settings.home_path)}
    command = [
        os.path.join(os.path.dirname(sys.executable), "dagster"),
        "dev",
        "-m",
        "lorechat_pipeline.definitions",
        "--host",
        host,
        "--port",
        str(port),
    ]
    os.execve(command[0], command, env)


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Interface to listen on (non-loopback needs API keys).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
) -> None:
    """Serve search and chat over the current index version (FastAPI; docs at /docs)."""
    from serving.server import WorkerStartFailed
    from serving.server import serve as run_server
    from serving.settings import UnsafeBinding

    try:
        run_server(host, port)
    except UnsafeBinding as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from error
    except WorkerStartFailed as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(3) from error


keys_app = typer.Typer(help="API keys for the serving app.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def create_key(
    name: Annotated[str, typer.Option(help="Who the key is for (shown in logs and metrics).")],
    collection: Annotated[
        list[str] | None,
        typer.Option(help="A collection the key may read (repeat; default: all)."),
    ] = None,
    requests_per_minute: Annotated[
        int | None, typer.Option(help="This key's rate limit (default: the server's).")
    ] = None,
) -> None:
    """Make a new API key: the key once on stderr, its LORECHAT_API_KEYS entry on stdout.

    The server stores only the SHA-256 digest; the key itself is not kept anywhere.
    """
    from serving.settings import hash_api_key, new_api_key

    key = new_api_key()
    entry: dict[str, Any] = {
        "name": name,
        "sha256": hash_api_key(key),
        "collections": collection or ["*"],
    }
    if requests_per_minute is not None:
        entry["requests_per_minute"] = requests_per_minute
    console.print(f"API key for {name} (shown once, give it to the caller): [bold]{key}[/]")
    console.print("Add this entry to the JSON list in LORECHAT_API_KEYS or LORECHAT_API_KEYS_FILE:")
    _emit(entry)


def main() -> None:  # pragma: no cover - console-script shim
    app()
