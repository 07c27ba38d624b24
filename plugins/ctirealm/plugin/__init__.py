"""The pytest plugin's core: options and ini keys, and the shared telemetry stores and engines.

Collectors for ``cases/`` and ``rules/`` live in sibling hook modules, each
registered as its own ``pytest11`` entry point; they reach the stores through
`session_store`, so every worker builds (or waits for) the same cached stores.
A dataset has a ``dev`` split (what agents' tools query) and usually a ``test``
split (`scoring_split`: where final detections are scored).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ..engine import Engine
from ..telemetry.dataset import Dataset, DatasetError
from ..telemetry.events import TelemetryFormatError
from ..telemetry.generator import ProfileError
from ..telemetry.schema import SchemaError, TableSchema
from ..telemetry.store import Store, build_store

_STORES = pytest.StashKey[dict[str, Store]]()
_STORE_ERROR = pytest.StashKey[str]()
_ENGINE = pytest.StashKey[Engine]()
_SPLIT_ENGINES = pytest.StashKey[dict[str, Engine]]()
_SPLITS = pytest.StashKey[list[str]]()


class StoreUnavailable(Exception):
    """The telemetry cannot be built at all (no ``dataset.yaml``, no schemas, a broken
    generator profile); the message names the file. Case and rule items report it."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ctirealm", "ctirealm detection-engineering benchmark")
    group.addoption(
        "--realm-telemetry",
        metavar="DIR",
        default=None,
        help="telemetry folder (default: ini realm_telemetry, else <rootdir>/telemetry)",
    )
    group.addoption(
        "--realm-cases",
        metavar="DIR",
        default=None,
        help="cases folder (default: ini realm_cases, else <rootdir>/cases)",
    )
    group.addoption(
        "--realm-cache-dir",
        metavar="DIR",
        default=None,
        help="where built stores are cached (default: $CTIREALM_CACHE_DIR or ~/.cache/ctirealm)",
    )
    group.addoption(
        "--realm-rows",
        metavar="N",
        type=int,
        default=None,
        help="size of the generated benign background (default: dataset.yaml)",
    )
    group.addoption(
        "--realm-timeout",
        metavar="SECONDS",
        type=float,
        default=None,
        help="per-query time limit (default: ini realm_query_timeout, 30)",
    )
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


def rules_root(config: pytest.Config) -> Path | None:
    """The rules folder (ini ``realm_rules``), or None when the rules plugin is disabled."""
    try:
        return (Path(config.rootpath) / str(config.getini("realm_rules"))).resolve()
    except ValueError:
        return None


def content_root(config: pytest.Config) -> Path | None:
    """The detection content folder (ini ``realm_content``), or None when the content plugin is
    disabled."""
    try:
        return (Path(config.rootpath) / str(config.getini("realm_content"))).resolve()
    except ValueError:
        return None


def session_store(config: pytest.Config, split: str = "dev") -> Store:
    """The session's store of *split*, built on first use.

    Under xdist the controller builds every split's store before starting workers
    and hands each worker their paths, so all workers read the very same stores
    even if telemetry files change during the run. The build is lenient: a bad
    event, schema or scenario file is left out and listed in ``store.problems``
    (the cases that need it fail, naming it; the others run). A dataset that
    cannot be built at all (no ``dataset.yaml``, no schemas, a broken generator
    profile) raises `StoreUnavailable`: `pytest_sessionstart` turns it into one
    usage error.
    """
    if _STORE_ERROR in config.stash:
        raise StoreUnavailable(config.stash[_STORE_ERROR])
    stores = config.stash.setdefault(_STORES, {})
    if split not in stores:
        handed = getattr(config, "workerinput", {}).get(f"realm_store_{split}")
        if handed:
            stores[split] = Store.open(Path(handed))
            return stores[split]
        cache = config.getoption("--realm-cache-dir")
        try:
            stores[split] = build_store(
                Dataset.load(telemetry_root(config)),
                cache_dir=Path(cache) if cache else None,
                rows=config.getoption("--realm-rows"),
                strict=False,
                split=split,
            )
        except (DatasetError, ProfileError, SchemaError, TelemetryFormatError) as exc:
            config.stash[_STORE_ERROR] = f"the telemetry store cannot be built: {exc}"
            raise StoreUnavailable(config.stash[_STORE_ERROR]) from None
    return stores[split]


def dataset_splits(config: pytest.Config) -> list[str]:
    """The dataset's splits, ``dev`` first (read from the dev store's metadata)."""
    if _SPLITS not in config.stash:
        config.stash[_SPLITS] = list(session_store(config).meta.get("splits") or ["dev"])
    return config.stash[_SPLITS]


def scoring_split(config: pytest.Config) -> str:
    """Where final detections are scored: ``test`` when the dataset has it, else ``dev``."""
    return "test" if "test" in dataset_splits(config) else "dev"


def split_engine(config: pytest.Config, split: str) -> Engine:
    """A read-only local engine on *split*'s store, for scoring (never given to an agent).

    Final detections are always scored here, on the machine that holds the labels;
    with ``--realm-engine kusto://...`` only the agent's own queries go to the cluster.
    """
    engines = config.stash.setdefault(_SPLIT_ENGINES, {})
    if split not in engines:
        if split == "dev" and engine_spec(config) == "local":
            engines[split] = session_engine(config)
        else:
            timeout = config.getoption("--realm-timeout") or float(config.getini("realm_query_timeout"))
            from ..engine.local import LocalEngine

            engines[split] = LocalEngine.of_store(session_store(config, split), timeout=timeout)
    return engines[split]


def benchmark_requested(config: pytest.Config) -> bool:
    """Whether this run collects cases or rules (so the store is worth building up front).

    True when a path argument (or, without any, the rootdir or a testpath) is the
    cases or rules folder, inside it, or above it. The plugin is active in every
    pytest run of an environment it is installed in; a run of unrelated tests
    must not build, or fail on, a store it never uses.
    """
    if not (telemetry_root(config) / "dataset.yaml").is_file() and not config.getoption("--realm-telemetry"):
        return False
    targets = [
        Path(config.invocation_params.dir, a.split("::", 1)[0]).resolve()
        for a in config.args
        if not a.startswith("-")
    ]
    folders = [f for f in (cases_root(config), rules_root(config), content_root(config)) if f is not None]
    return any(t == f or t in f.parents or f in t.parents for t in targets for f in folders)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Build the store before collection when this run needs it, so a dataset that cannot be
    built ends the session with one clear message (not an error per collected file)."""
    config = session.config
    if hasattr(config, "workerinput") or not benchmark_requested(config):
        return
    try:
        for split in dataset_splits(config):
            session_store(config, split)
    except StoreUnavailable as exc:
        pytest.exit(f"ctirealm: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)


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
    # Items carry xdist_group marks (a case's checkpoints on one worker); registered here too so
    # a run with xdist disabled (-p no:xdist) under --strict-markers still collects them.
    config.addinivalue_line("markers", "xdist_group(name): run the group's items on one xdist worker")


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
            from ..engine.local import LocalEngine

            config.stash[_ENGINE] = LocalEngine.of_store(store, timeout=timeout)
        else:
            from ..engine.kusto import KustoEngine

            schemas = {
                name: TableSchema(
                    name, tuple((c, t) for c, t in spec["columns"]), spec["id_column"], spec["time_column"]
                )
                for name, spec in store.meta["schemas"].items()
            }
            try:
                config.stash[_ENGINE] = KustoEngine.connect(
                    None if spec == "kusto" else spec, schemas=schemas, now=store.now, timeout=timeout
                )
            except (ValueError, ImportError) as exc:
                raise pytest.UsageError(f"--realm-engine {spec}: {exc}") from None
    return config.stash[_ENGINE]


@pytest.fixture(scope="session")
def realm_store(pytestconfig: pytest.Config) -> Store:
    """The built ``dev`` telemetry store (what agents query): path, metadata and labels."""
    return session_store(pytestconfig)


@pytest.fixture(scope="session")
def realm_stores(pytestconfig: pytest.Config) -> dict[str, Store]:
    """Every split's store by name: ``dev``, and ``test`` where final detections are scored."""
    return {split: session_store(pytestconfig, split) for split in dataset_splits(pytestconfig)}


@pytest.fixture(scope="session")
def realm_engine(pytestconfig: pytest.Config) -> Engine:
    """A read-only engine over the telemetry store (override it to use another engine)."""
    return session_engine(pytestconfig)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: object) -> None:
    """xdist controller: build the stores once, pass their paths to the worker being started."""
    config = node.config  # type: ignore[attr-defined]
    if benchmark_requested(config):
        for split in dataset_splits(config):
            node.workerinput[f"realm_store_{split}"] = str(  # type: ignore[attr-defined]
                session_store(config, split).path
            )


def pytest_unconfigure(config: pytest.Config) -> None:
    engines = [config.stash.get(_ENGINE, None), *config.stash.get(_SPLIT_ENGINES, {}).values()]
    for engine in {id(e): e for e in engines if e is not None}.values():
        close = getattr(engine, "close", None)
        if callable(close):
            close()
