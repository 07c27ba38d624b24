"""Telemetry: table schemas, loading event files, the benign generator, the DuckDB store, labels."""
