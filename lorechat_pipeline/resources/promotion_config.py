"""How a new index version earns promotion, and how long replaced versions are kept."""

from datetime import timedelta

import dagster as dg

from lorechat_pipeline.core.evaluation import GoldenQuery, parse_golden_queries
from lorechat_pipeline.resources.object_store import ObjectStoreResource


class PromotionConfig(dg.ConfigurableResource):
    # A JSON-lines golden set at `golden_queries_key` in this store; none: derived (evaluation.py).
    golden_queries_store: ObjectStoreResource | None = None
    golden_queries_key: str = ""
    max_quality_drop: float = 0.02
    k: int = 10
    retention_hours: float = 168.0

    def golden_queries(self) -> list[GoldenQuery] | None:
        if self.golden_queries_store is None:
            return None
        store = self.golden_queries_store.open()
        return parse_golden_queries(store.read(self.golden_queries_key))

    @property
    def retention(self) -> timedelta:
        return timedelta(hours=self.retention_hours)
