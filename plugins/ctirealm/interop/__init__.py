"""Interoperability with Kusto clusters: serve the store over the Kusto REST API, and push
telemetry to a cluster. (The upstream importer lives in `cases.upstream`, the Inspect log replay
in `agents.inspect_log`.)

Each sub-module is imported on demand, so the optional packages each needs
(azure-kusto-ingest) are only required by the feature that uses them.
"""
