"""Sigma: parse, validate (SigmaHQ validators, offline), convert to KQL, evaluate over telemetry."""
