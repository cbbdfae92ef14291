"""serving.search on an Upstash index: dense, keyword and hybrid modes dispatch to Upstash's own
ranking (a hybrid index on the contract server), with the serving filters and result columns."""

import numpy as np
import pytest

from lorechat_pipeline.core.backends.upstash_client import UpstashCredentials, UpstashVectorClient
from lorechat_pipeline.core.backends.upstash_index import UpstashVectorIndex
from serving.search import RESULT_COLUMNS, ModeUnavailable, SearchMode, filter_sql, search
from tests.backends.conftest import (
    DIMENSION,
    TOKEN,
    chunk_rows,
    fast_backoff,
    make_manifest,
    table,
    unit_vectors,
)
from tests.backends.upstash_contract_server import upstash_contract_server

TEXTS = {
    "tea": ["green tea brewing temperature", "storing tea leaves"],
    "bikes": ["fixing a flat bicycle tyre", "chain lubrication in the rain"],
}


@pytest.mark.parametrize("hybrid", [True, False])
def test_search_modes_on_upstash(hybrid: bool) -> None:
    with (
        upstash_contract_server(token=TOKEN, dimension=DIMENSION, hybrid=hybrid) as server,
        UpstashVectorClient(UpstashCredentials(server.url, TOKEN), backoff=fast_backoff()) as c,
    ):
        index = UpstashVectorIndex.open_or_create(c, make_manifest())
        rows = []
        for seed, (doc, texts) in enumerate(TEXTS.items()):
            collection = "kitchen" if doc == "tea" else "garage"
            rows += chunk_rows(
                doc, texts, unit_vectors(len(texts), seed=seed), collection=collection
            )
        index.replace_documents(table(rows), list(TEXTS))
        query = np.asarray(rows[2]["vector"], dtype=np.float32)

        dense = search(index, SearchMode.DENSE, "", query, 2, None)
        assert dense[0].chunk_id == rows[2]["chunk_id"]
        assert dense[0].score == pytest.approx(1.0, abs=1e-5)
        assert set(dense[0].row) == set(RESULT_COLUMNS)
        scoped = search(index, SearchMode.DENSE, "", query, 4, filter_sql(None, ["kitchen"]))
        assert {hit.row["collection"] for hit in scoped} == {"kitchen"}
        assert search(index, SearchMode.DENSE, "", query, 4, filter_sql(None, [])) == []

        if hybrid:
            keyword = search(index, SearchMode.KEYWORD, "flat tyre", None, 2, None)
            assert keyword[0].chunk_id == rows[2]["chunk_id"]
            fused = search(index, SearchMode.HYBRID, "storing tea", query, 3, None)
            assert {hit.chunk_id for hit in fused} >= {rows[1]["chunk_id"], rows[2]["chunk_id"]}
        else:
            with pytest.raises(ModeUnavailable, match="hybrid index"):
                search(index, SearchMode.KEYWORD, "flat tyre", None, 2, None)
            # Hybrid (what chat asks for) falls back to the dense ranking.
            fallback = search(index, SearchMode.HYBRID, "flat tyre", query, 2, None)
            assert [h.chunk_id for h in fallback] == [h.chunk_id for h in dense]
