"""Pipeline metrics as CloudWatch Embedded Metric Format (EMF) log lines.

A line printed on stdout in a container whose logs go to CloudWatch Logs (the ECS `awslogs`
driver) becomes a metric without any API call or agent: CloudWatch extracts the values named in
the `_aws` metadata. No dimensions are set, so dashboards and alarms read the plain metric
(`infra/building_blocks/observability.py` uses the same names).

Pure Python: no dagster import, so any stage or the serving app may use it.
"""

import json
import sys
import time
from collections.abc import Mapping
from typing import TextIO

NAMESPACE = "LoreChat/Pipeline"
DOCUMENTS_PROCESSED = "DocumentsProcessed"
DOCUMENTS_QUARANTINED = "DocumentsQuarantined"
RUN_FAILURES = "RunFailures"
PIPELINE_METRICS = (DOCUMENTS_PROCESSED, DOCUMENTS_QUARANTINED, RUN_FAILURES)

# Keys CloudWatch reserves in an EMF document: a metric may not be called like them.
_RESERVED = frozenset({"_aws"})


def emf_line(
    values: Mapping[str, int | float],
    *,
    namespace: str = NAMESPACE,
    unit: str = "Count",
    timestamp_ms: int | None = None,
) -> str:
    """One EMF JSON document (a single line) carrying `values` as metrics of `unit`.

    >>> emf_line({"DocumentsProcessed": 3}, timestamp_ms=0)  # doctest: +NORMALIZE_WHITESPACE
    '{"_aws": {"Timestamp": 0, "CloudWatchMetrics": [{"Namespace": "LoreChat/Pipeline",
    "Dimensions": [[]], "Metrics": [{"Name": "DocumentsProcessed", "Unit": "Count"}]}]},
    "DocumentsProcessed": 3}'
    """
    if not values:
        raise ValueError("an EMF line needs at least one metric")
    if len(values) > 100:
        raise ValueError("EMF allows at most 100 metrics per document")
    for name, value in values.items():
        if not name or name in _RESERVED:
            raise ValueError(f"invalid metric name {name!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"metric {name!r} must be a number, not {type(value).__name__}")
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"metric {name!r} must be finite")
    document: dict[str, object] = {
        "_aws": {
            "Timestamp": int(time.time() * 1000) if timestamp_ms is None else timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [[]],
                    "Metrics": [{"Name": name, "Unit": unit} for name in values],
                }
            ],
        },
        **values,
    }
    return json.dumps(document, separators=(", ", ": "))


def emit_metrics(
    values: Mapping[str, int | float],
    *,
    stream: TextIO | None = None,
    namespace: str = NAMESPACE,
    unit: str = "Count",
) -> None:
    """Print one EMF line (stdout by default) and flush, so the log driver ships it at once."""
    out = sys.stdout if stream is None else stream
    out.write(emf_line(values, namespace=namespace, unit=unit) + "\n")
    out.flush()
