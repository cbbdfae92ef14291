"""The pipeline's CloudWatch EMF lines: the documented shape, so CloudWatch extracts them."""

import io
import json
import subprocess
import sys
import time

import pytest

from lorechat_pipeline.core.metrics import (
    DOCUMENTS_PROCESSED,
    DOCUMENTS_QUARANTINED,
    NAMESPACE,
    RUN_FAILURES,
    emf_line,
    emit_metrics,
)


def test_line_has_the_documented_emf_shape() -> None:
    line = emf_line({DOCUMENTS_PROCESSED: 3, DOCUMENTS_QUARANTINED: 1}, timestamp_ms=1_700_000)

    assert "\n" not in line
    document = json.loads(line)
    assert document == {
        "_aws": {
            "Timestamp": 1_700_000,
            "CloudWatchMetrics": [
                {
                    "Namespace": "LoreChat/Pipeline",
                    "Dimensions": [[]],
                    "Metrics": [
                        {"Name": "DocumentsProcessed", "Unit": "Count"},
                        {"Name": "DocumentsQuarantined", "Unit": "Count"},
                    ],
                }
            ],
        },
        "DocumentsProcessed": 3,
        "DocumentsQuarantined": 1,
    }


def test_every_declared_metric_value_is_a_top_level_member() -> None:
    document = json.loads(emf_line({RUN_FAILURES: 1}))
    directive = document["_aws"]["CloudWatchMetrics"][0]

    assert directive["Namespace"] == NAMESPACE
    for metric in directive["Metrics"]:
        assert isinstance(document[metric["Name"]], int | float)


def test_timestamp_defaults_to_now_in_milliseconds() -> None:
    before = int(time.time() * 1000)
    stamp = json.loads(emf_line({DOCUMENTS_PROCESSED: 0}))["_aws"]["Timestamp"]
    after = int(time.time() * 1000)

    assert before <= stamp <= after


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({}, ValueError),
        ({"_aws": 1}, ValueError),
        ({"": 1}, ValueError),
        ({DOCUMENTS_PROCESSED: float("nan")}, ValueError),
        ({DOCUMENTS_PROCESSED: float("inf")}, ValueError),
        ({DOCUMENTS_PROCESSED: "3"}, TypeError),
        ({DOCUMENTS_PROCESSED: True}, TypeError),
        ({f"M{i}": 1 for i in range(101)}, ValueError),
    ],
)
def test_refuses_what_cloudwatch_would_drop(values: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        emf_line(values)


def test_emit_writes_one_flushed_line() -> None:
    stream = io.StringIO()
    emit_metrics({DOCUMENTS_PROCESSED: 2}, stream=stream)
    emit_metrics({RUN_FAILURES: 1}, stream=stream)

    lines = stream.getvalue().splitlines()
    assert [
        json.loads(line)[name]
        for line, name in zip(lines, [DOCUMENTS_PROCESSED, RUN_FAILURES], strict=True)
    ] == [2, 1]


def test_module_does_not_import_dagster() -> None:
    code = (
        "import sys, lorechat_pipeline.core.metrics; "
        "print(any(m == 'dagster' or m.startswith('dagster.') for m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
