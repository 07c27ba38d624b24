"""Rewrites that close gaps between duckdb-kql and Kusto (placeholder)."""

from __future__ import annotations


def install() -> None:
    """Install the rewrites."""


def uninstall() -> None:
    """Remove the rewrites."""
