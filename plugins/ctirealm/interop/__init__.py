"""Interoperability: serve the store over the Kusto REST API, push telemetry to a cluster,
import the upstream CTI-REALM dataset layout, and replay Inspect AI logs as trajectories.

Each sub-module is imported on demand, so the optional packages each needs
(azure-kusto-ingest, inspect-ai) are only required by the feature that uses them.
"""
