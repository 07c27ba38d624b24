"""The ``ctirealm`` command: one sub-module per command family, each with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Command modules under ``ctirealm.cli``; each adds its sub-commands.
COMMANDS = ["telemetry", "query", "bench", "cases", "sigma", "report", "serve", "importer", "mcp", "init"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctirealm",
        description="Detection-engineering benchmark: telemetry, KQL, Sigma, scoring.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a clear one-line message, never a traceback, for known errors
        from ..cases import CaseError
        from ..engine import EngineError
        from ..telemetry.dataset import DatasetError
        from ..telemetry.events import TelemetryFormatError
        from ..telemetry.schema import SchemaError

        if isinstance(
            exc,
            (
                EngineError,
                DatasetError,
                TelemetryFormatError,
                SchemaError,
                CaseError,
                FileNotFoundError,
                ValueError,
            ),
        ):
            print(f"ctirealm: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
