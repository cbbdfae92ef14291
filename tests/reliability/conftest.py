"""The pipeline fixtures (`make_pipeline`, ...) of tests/pipeline, for the reliability suite."""

from tests.pipeline.conftest import make_pipeline

__all__ = ["make_pipeline"]
