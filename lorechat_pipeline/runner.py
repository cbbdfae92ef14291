"""Run the asset graph for what changed, on a persistent Dagster instance (visible in the UI)."""

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from lorechat_pipeline.core.embedding import Embedder
from lorechat_pipeline.core.ids import SHARD_COUNT, shard_names
from lorechat_pipeline.core.index_protocol import VectorIndex
from lorechat_pipeline.core.layout import ProcessedLayout
from lorechat_pipeline.core.ledger import QUARANTINED, LedgerEntry, load_ledger
from lorechat_pipeline.core.manifest import IndexManifest
from lorechat_pipeline.core.memory import bound_heap_retention, release_freed_memory
from lorechat_pipeline.core.planning import IngestPlan, group_listing, plan_shard
from lorechat_pipeline.core.stages.embedding import awaiting_embedding, embed_ahead, encoder_turns
from lorechat_pipeline.core.stages.observation import load_catalog
from lorechat_pipeline.core.stages.parse_ahead import parse_ahead
from lorechat_pipeline.core.storage import ObjectStore
from lorechat_pipeline.core.vector_index import IndexNotFound
from lorechat_pipeline.definitions import build_definitions
from lorechat_pipeline.defs.ingestion.assets import DELETION_GUARD_CHECK
from lorechat_pipeline.instance import open_instance
from lorechat_pipeline.resources.embedder import EmbedderResource
from lorechat_pipeline.resources.ingestion_config import IngestionConfig
from lorechat_pipeline.resources.object_store import ObjectStoreResource
from lorechat_pipeline.resources.vector_store import VectorStoreResource
from lorechat_pipeline.settings import LorechatSettings

logger = logging.getLogger(__name__)


class IngestFailed(RuntimeError):
    pass


# Runs the CLI executes in its own process carry that process's id and host, so that a run whose
# process was killed (kill -9, the OOM killer, a lost container) can be told from a live one.
RUN_PID_TAG = "lorechat/pid"
RUN_HOST_TAG = "lorechat/host"
UNFINISHED = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def _cli_run_tags() -> dict[str, str]:
    return {"lorechat/trigger": "cli", RUN_PID_TAG: str(os.getpid()), RUN_HOST_TAG: _host()}


def _host() -> str:
    return socket.gethostname()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def fail_abandoned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the CLI runs of this host whose process is gone.

    A killed process never reports its run's end, so the run stays STARTED for ever: the UI shows
    it running, and under `lorechat dev` it would hold its partition's run slot (one run per
    shard at a time), so the daemon would never start another run of that shard.
    """
    abandoned = []
    filters = dg.RunsFilter(statuses=UNFINISHED, tags={RUN_HOST_TAG: _host()})
    for run in instance.get_runs(filters=filters):
        pid = int(run.tags.get(RUN_PID_TAG, "0") or 0)
        if pid > 0 and pid != os.getpid() and not _process_alive(pid):
            instance.report_run_failed(
                run, f"the process that ran it (pid {pid}) ended without finishing it"
            )
            abandoned.append(run.run_id)
    return abandoned


@dataclass
class Promotion:
    candidate: str
    previous: str | None
    promoted: bool
    refused: str | None  # the failed checks when not promoted
    run_id: str

    def as_json(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "previous": self.previous,
            "promoted": self.promoted,
            "refused": self.refused,
        }


@dataclass
class IngestSummary:
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    quarantined: int = 0
    chunks_written: int = 0
    chunks_deleted: int = 0
    seconds: float = 0.0
    shards_run: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    quarantine: list[LedgerEntry] = field(default_factory=list)
    promotion: Promotion | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "promotion": self.promotion.as_json() if self.promotion else None,
            "documents": {
                "new": self.new,
                "changed": self.changed,
                "unchanged": self.unchanged,
                "deleted": self.deleted,
                "quarantined": self.quarantined,
            },
            "chunks": {"written": self.chunks_written, "deleted": self.chunks_deleted},
            "seconds": round(self.seconds, 3),
        }


@dataclass
class Pipeline:
    """The configured resources, opened once, for the CLI and the benchmarks."""

    settings: LorechatSettings
    definitions: dg.Definitions
    # Dagster's per-event console lines; the run's full event log is on the instance regardless.
    log_level: str = "WARNING"
    work_ahead: bool = True
    _exit_stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _resources: Any = None

    @classmethod
    def from_settings(cls, settings: LorechatSettings) -> "Pipeline":
        return cls(settings, build_definitions(settings))

    def resource(self, key: str) -> Any:
        # As Dagster does at launch: EnvVar secrets resolved, nested resources initialised.
        if self._resources is None:
            self._resources = self._exit_stack.enter_context(
                dg.build_resources(dict(self.definitions.resources or {}))
            )
        return getattr(self._resources, key)

    def close(self) -> None:
        self._exit_stack.close()
        self._resources = None

    @property
    def source(self) -> ObjectStore:
        resource: ObjectStoreResource = self.resource("source")
        return resource.open()

    @property
    def processed(self) -> ObjectStore:
        resource: ObjectStoreResource = self.resource("processed_store")
        return resource.open()

    @property
    def embedder(self) -> Embedder:
        resource: EmbedderResource = self.resource("embedder")
        return resource.get_embedder()

    @property
    def config(self) -> IngestionConfig:
        config: IngestionConfig = self.resource("ingestion_config")
        return config

    @property
    def manifest(self) -> IndexManifest:
        return self.config.manifest(self.embedder)

    @property
    def layout(self) -> ProcessedLayout:
        return self.config.layout(self.embedder)

    def open_index(self) -> VectorIndex:
        store: VectorStoreResource = self.resource("vector_store")
        return store.open_for_read(self.manifest)

    def open_current_index(self) -> VectorIndex:
        """The version the alias names: what searches read (the embedder must match it)."""
        store: VectorStoreResource = self.resource("vector_store")
        return store.open_current(self.manifest)

    @property
    def vector_store(self) -> VectorStoreResource:
        store: VectorStoreResource = self.resource("vector_store")
        return store

    def instance(self) -> dg.DagsterInstance:
        return open_instance(self.settings)

    def plan(self) -> IngestPlan:
        processed, layout = self.processed, self.layout
        try:
            index: VectorIndex | None = self.open_index()
        except IndexNotFound:
            index = None
        plan = IngestPlan()
        for shard, objects in group_listing(self.source.list_objects(), SHARD_COUNT).items():
            plan.listings[shard] = objects
            plan.shards.append(
                plan_shard(
                    shard,
                    objects,
                    SHARD_COUNT,
                    load_catalog(processed, shard),
                    load_ledger(processed, layout.chunk_ledger(shard)),
                    load_ledger(processed, layout.embedding_ledger(shard)),
                    index.document_versions(shard) if index else {},
                )
            )
        return plan

    def quarantine(self) -> list[LedgerEntry]:
        processed, layout = self.processed, self.layout
        entries = []
        for shard in shard_names(SHARD_COUNT):
            ledger = load_ledger(processed, layout.chunk_ledger(shard))
            entries += [e for e in ledger.values() if e.status == QUARANTINED]
        return sorted(entries, key=lambda e: e.document)

    def _run_config(self, ops: dict[str, Any] | None = None) -> dict[str, Any]:
        config: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": self.log_level}}}}
        if ops:
            config["ops"] = ops
        return config

    def ingest(
        self,
        on_shard_done: Callable[[str], None] | None = None,
        *,
        confirm_deletions: bool = False,
        promote: bool = True,
    ) -> IngestSummary:
        started = time.perf_counter()
        # Shards run in this process one after another: memory must not grow with their number.
        bound_heap_retention()
        plan = self.plan()
        summary = IngestSummary(unchanged=plan.documents_in_settled_shards)
        job = self.definitions.resolve_job_def("ingest_job")
        instance = self.instance()
        fail_abandoned_runs(instance)
        observation = {"raw_documents": {"config": {"confirm_deletions": confirm_deletions}}}
        refused_deletions: list[str] = []
        # Only encoding keeps both cores busy: the next shard's documents are parsed while this
        # one embeds, and embedded while this one writes its index and checks it (the first
        # shard has nothing to overlap with: it parses in its run).
        ahead = _WorkAhead(self, plan) if self.work_ahead and len(plan.to_run) > 1 else None
        try:
            for position, shard in enumerate(plan.to_run):
                if ahead:
                    ahead.allow_through(position + 1)
                # Rows are folded into the index's indexes once, by the last run.
                last = position == len(plan.to_run) - 1
                index_write = {"config": {"fold_into_indexes": last}}
                result = job.execute_in_process(
                    partition_key=shard,
                    instance=instance,
                    raise_on_error=False,
                    run_config=self._run_config({**observation, "vector_index": index_write}),
                    tags=_cli_run_tags(),
                )
                summary.run_ids.append(result.run_id)
                summary.shards_run.append(shard)
                if not result.success:
                    raise IngestFailed(_failure_message(result, shard))
                refused_deletions += [
                    str(evaluation.description)
                    for evaluation in result.get_asset_check_evaluations()
                    if evaluation.check_name == DELETION_GUARD_CHECK and not evaluation.passed
                ]
                _add_run(summary, result)
                release_freed_memory()
                if on_shard_done:
                    on_shard_done(shard)
        finally:
            if ahead:
                ahead.stop()
        if refused_deletions:
            # Every other change went in; the refused deletions wait for a confirmation.
            raise IngestFailed(refused_deletions[0])
        if promote:
            summary.promotion = self.promote_if_needed(instance)
        summary.seconds = time.perf_counter() - started
        return summary

    def promote_if_needed(self, instance: dg.DagsterInstance | None = None) -> Promotion | None:
        """Run the promotion when this configuration's version is not the current one."""
        store = self.vector_store
        target = store.target_table(self.manifest)
        current = store.aliases().current_table()
        if current == target or target not in store.versions():
            return None
        result = self.definitions.resolve_job_def("promote_job").execute_in_process(
            instance=instance or self.instance(),
            raise_on_error=False,
            run_config=self._run_config(),
            tags=_cli_run_tags(),
        )
        failed_checks = [
            f"{evaluation.check_name}: {evaluation.description}"
            for evaluation in result.get_asset_check_evaluations()
            if not evaluation.passed
        ]
        if not result.success and not failed_checks:
            raise IngestFailed(_failure_message(result, "promotion"))
        return Promotion(
            candidate=target,
            previous=current,
            promoted=store.aliases().current_table() == target,
            refused="; ".join(failed_checks) or None,
            run_id=result.run_id,
        )


class _WorkAhead:
    """A thread that parses, then embeds, the planned shards (after the first) in order, each
    once the runner allows it: `allow_through(i)` while shard i-1 runs. Parsing uses the parser
    pool and embedding the encoder only when the running shard's steps do not."""

    def __init__(self, pipeline: Pipeline, plan: IngestPlan):
        self._pipeline = pipeline
        self._plan = plan
        self._allowed = 0
        # Per position allowed: how often the encoder had been asked for its shard before its
        # run could start (an embed-ahead gives up once the shard's own step asks).
        self._asked_before: dict[int, int] = {}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lorechat-work-ahead", daemon=True)
        self._thread.start()

    def allow_through(self, position: int) -> None:
        """Called before the run of the shard at `position - 1` starts."""
        with self._changed:
            for allowed in range(self._allowed + 1, min(position, len(self._plan.to_run) - 1) + 1):
                self._asked_before[allowed] = encoder_turns.asked(self._plan.to_run[allowed])
            self._allowed = max(self._allowed, position)
            self._changed.notify_all()

    def stop(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        self._thread.join()

    def _run(self) -> None:
        pipeline = self._pipeline
        try:
            source, processed, config = pipeline.source, pipeline.processed, pipeline.config
            layout = config.chunk_layout()
            embedder, embedding_layout = pipeline.embedder, pipeline.layout
            for position, shard in enumerate(self._plan.to_run[1:], start=1):
                with self._changed:
                    while self._allowed < position and not self._stop.is_set():
                        self._changed.wait()
                    if self._stop.is_set():
                        return
                    asked_before = self._asked_before[position]
                parsed = parse_ahead(
                    source,
                    processed,
                    shard,
                    self._plan.listings.get(shard, []),
                    shard_count=SHARD_COUNT,
                    layout=layout,
                    max_document_bytes=config.max_document_bytes,
                    open_parser=config.open_parser_in_background,
                    stop=self._stop,
                )
                embedded = embed_ahead(
                    processed,
                    shard,
                    {
                        **awaiting_embedding(processed, shard, embedding_layout),
                        **dict(parsed.chunked),
                    }.items(),
                    layout=embedding_layout,
                    embedder=embedder,
                    stop=self._stop,
                    asked_before=asked_before,
                )
                logger.debug("ahead of %s's run: %s, %s", shard, parsed, embedded)
        except Exception:
            # The shard's own run does whatever this did not: nothing is lost but the overlap.
            logger.warning("working ahead stopped", exc_info=True)


def _metadata(result: Any, node: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for materialization in result.asset_materializations_for_node(node):
        for name, value in materialization.metadata.items():
            values[name] = getattr(value, "value", value)
    return values


def _add_run(summary: IngestSummary, result: Any) -> None:
    observed = _metadata(result, "raw_documents")
    chunked = _metadata(result, "document_chunks")
    indexed = _metadata(result, "vector_index")
    summary.new += observed.get("documents_new", 0)
    summary.changed += observed.get("documents_changed", 0)
    summary.unchanged += observed.get("documents_unchanged", 0)
    summary.deleted += observed.get("documents_deleted", 0)
    summary.quarantined += chunked.get("documents_quarantined", 0)
    summary.chunks_written += indexed.get("chunks_written", 0)
    summary.chunks_deleted += indexed.get("chunks_deleted", 0)


def _failure_message(result: Any, shard: str) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            message = f"{shard}: step {event.step_key} failed: {error.message.strip()}"
            # After the step's retries, the failure is "Exceeded max_retries"; name the cause.
            cause = error.cause
            while cause is not None and cause.cause is not None:
                cause = cause.cause
            if cause is not None:
                message += f" (the last attempt: {cause.message.strip()})"
            return message
    return f"{shard}: run {result.run_id} failed"
