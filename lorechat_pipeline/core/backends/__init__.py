"""Hosted backends: Upstash Vector (an index behind the same interface as LanceDB) and the shared
retry policy. No dagster or unstructured import: the serving container uses these modules too."""
