"""The pytest plugin's core: options and ini keys, and the shared telemetry store and engine.

Collectors for ``cases/`` and ``rules/`` live in sibling hook modules, each
registered as its own ``pytest11`` entry point; they reach the store through
`session_store`, so every worker builds (or waits for) the same cached store.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ..engine import Engine
from ..telemetry.dataset import Dataset
from ..telemetry.schema import TableSchema
from ..telemetry.store import Store, build_store

_STORE = pytest.StashKey[Store]()
_ENGINE = pytest.StashKey[Engine]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ctirealm", "ctirealm detection-engineering benchmark")
    group.addoption("--realm-telemetry", metavar="DIR", default=None,
                    help="telemetry folder (default: ini realm_telemetry, else <rootdir>/telemetry)")
    group.addoption("--realm-cases", metavar="DIR", default=None,
                    help="cases folder (default: ini realm_cases, else <rootdir>/cases)")
    group.addoption("--realm-cache-dir", metavar="DIR", default=None,
                    help="where built stores are cached (default: $CTIREALM_CACHE_DIR or ~/.cache/ctirealm)")
    group.addoption("--realm-rows", metavar="N", type=int, default=None,
                    help="size of the generated benign background (default: dataset.yaml)")
    group.addoption("--realm-timeout", metavar="SECONDS", type=float, default=None,
                    help="per-query time limit (default: ini realm_query_timeout, 30)")
    parser.addini("realm_telemetry", "telemetry folder, relative to rootdir", default="telemetry")
    parser.addini("realm_cases", "cases folder, relative to rootdir", default="cases")
    parser.addini("realm_query_timeout", "per-query time limit in seconds", default="30")


def _path_option(config: pytest.Config, option: str, ini: str) -> Path:
    value = config.getoption(option)
    if value:
        return Path(value).resolve()
    return (Path(config.rootpath) / str(config.getini(ini))).resolve()


def telemetry_root(config: pytest.Config) -> Path:
    return _path_option(config, "--realm-telemetry", "realm_telemetry")


def cases_root(config: pytest.Config) -> Path:
    return _path_option(config, "--realm-cases", "realm_cases")


def session_store(config: pytest.Config) -> Store:
    """The session's store, built on first use.

    Under xdist the controller builds it before starting workers and hands each
    worker the path, so all workers read the very same store even if telemetry
    files change during the run.
    """
    if _STORE not in config.stash:
        handed = getattr(config, "workerinput", {}).get("realm_store")
        if handed:
            config.stash[_STORE] = Store.open(Path(handed))
            return config.stash[_STORE]
        cache = config.getoption("--realm-cache-dir")
        config.stash[_STORE] = build_store(
            Dataset.load(telemetry_root(config)),
            cache_dir=Path(cache) if cache else None,
            rows=config.getoption("--realm-rows"),
        )
    return config.stash[_STORE]


def engine_spec(config: pytest.Config) -> str:
    """``--realm-engine``: ``local`` (default) or a ``kusto://HOST[:PORT]/DATABASE`` URL."""
    try:
        value = config.getoption("--realm-engine")
    except ValueError:  # the cases plugin (which adds the option) is disabled
        value = None
    return str(value or "local").strip()


def _check_engine_spec(spec: str) -> None:
    """A bad ``--realm-engine`` is a usage error at start-up, not a failure in every test."""
    if spec == "local":
        return
    if spec == "kusto" or spec.startswith(("kusto:", "https:", "http:")):
        from ..engine.kusto import parse_kusto_url

        try:
            parse_kusto_url(None if spec == "kusto" else spec)
        except ValueError as exc:
            raise pytest.UsageError(f"--realm-engine {spec}: {exc}") from None
        return
    raise pytest.UsageError(f"--realm-engine {spec!r}: use local or kusto://HOST[:PORT]/DATABASE")


def pytest_configure(config: pytest.Config) -> None:
    _check_engine_spec(engine_spec(config))


def session_engine(config: pytest.Config) -> Engine:
    """One read-only engine per process: on the session's store, or on a Kusto endpoint.

    With ``--realm-engine kusto://...`` queries go to the cluster; the local
    store still provides the schemas (id and time columns), the clock and the
    labels, which are never sent anywhere.
    """
    if _ENGINE not in config.stash:
        timeout = config.getoption("--realm-timeout") or float(config.getini("realm_query_timeout"))
        store = session_store(config)
        spec = engine_spec(config)
        _check_engine_spec(spec)
        if spec == "local":
            config.stash[_ENGINE] = store.engine(timeout=timeout)
        else:
            from ..engine.kusto import KustoEngine

            schemas = {
                name: TableSchema(name, tuple((c, t) for c, t in spec["columns"]),
                                  spec["id_column"], spec["time_column"])
                for name, spec in store.meta["schemas"].items()
            }
            try:
                config.stash[_ENGINE] = KustoEngine.connect(
                    None if spec == "kusto" else spec, schemas=schemas, now=store.now,
                    timeout=timeout)
            except (ValueError, ImportError) as exc:
                raise pytest.UsageError(f"--realm-engine {spec}: {exc}") from None
    return config.stash[_ENGINE]


@pytest.fixture(scope="session")
def realm_store(pytestconfig: pytest.Config) -> Store:
    """The built telemetry store: path, metadata and labels."""
    return session_store(pytestconfig)


@pytest.fixture(scope="session")
def realm_engine(pytestconfig: pytest.Config) -> Engine:
    """A read-only engine over the telemetry store (override it to use another engine)."""
    return session_engine(pytestconfig)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: object) -> None:
    """xdist controller: build the store once, pass its path to the worker being started."""
    config = node.config  # type: ignore[attr-defined]
    node.workerinput["realm_store"] = str(session_store(config).path)  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    engine = config.stash.get(_ENGINE, None)
    close = getattr(engine, "close", None)
    if callable(close):
        close()
