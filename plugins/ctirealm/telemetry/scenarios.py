"""Attack scenarios and benign look-alikes: parametrised stories played onto the organisation.

A scenario file (``telemetry/scenarios/<case>.yaml``) describes, for one case, what
the intrusion does and what ordinary work looks like it, as templates in the same
language as the background profiles (``telemetry/generator/*.yaml``):

* ``attack`` — one story (or a list): the procedure, as steps on tables;
* ``lookalikes`` — stories of benign work a careless detection also matches; their
  events are labelled hard negatives;
* ``routine`` — stories of ordinary work, played like look-alikes (usually many times)
  but not labelled: the correlations across tables that normal work has too (a service
  principal signs in, then reads secrets), so that a join alone is not a detection;
* ``background`` — benign templates merged into the generator's tables, so the
  behaviour also occurs at its base rate in unlabelled background
  (see `generator.load_profiles`);
* ``binaries`` — executables the stories need beyond the profiles' own.

A story binds its entities once per instance (``bind``: a pool selector such as
``hosts[role=build]`` or a list of alternatives, like Atomic Red Team input
arguments), draws its start from a rhythm (``when``) and plays its ``steps`` in
order, each ``after: [min, max]`` seconds after the previous one. Steps are
compiled by the background's own table engine with the table's own layout, id
stream and clock, so an attack row has the ids, time precision, hosts, users and
formatting of every other row: nothing but its behaviour tells it apart.

Stories are played once per **split**. Each split has its own seed, and every
candidate list of two or more entries is dealt out between the splits (the
``i``-th split draws from entries ``i, i + n, ...``), so the ``test`` split
re-simulates the procedure on other hosts, users, paths and command variants than
``dev``. Rows go to JSONL files the store validates and labels like committed
events: ``attack/<case>/<Table>.jsonl`` and ``benign/<case>/<Table>.jsonl``, and
routine rows (unlabelled) to ``routine/<case>/<Table>.jsonl``.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from random import Random
from typing import Any

import yaml

# The scenario player is the background generator's table engine driven by a story
# instead of by weights: same package, same private machinery on purpose.
from .generator.profiles import _LOADER, ProfileError, _escape_braces, _load_schemas, load_profiles
from .generator.tables import _TableGenerator
from .generator.templates import _select
from .generator.values import _Clock, _ReportIds

#: Id stream of scenario rows: the background uses streams 0 and 1 of each id family;
#: every stream is scattered over the whole id space by the same seeded bijection.
SCENARIO_STREAM = 3
#: First shard of scenario tables within that stream (one shard per table).
SCENARIO_SHARD = 64
#: Section of a scenario file -> kind of its stories, and the folder their rows go to.
_SECTIONS = {"attack": "attack", "lookalikes": "hard_negative", "routine": "routine"}
_FOLDERS = {"attack": "attack", "hard_negative": "benign", "routine": "routine"}
#: Tries to place a story so that all its steps fall inside the window.
_PLACEMENT_TRIES = 50
_STORY_KEYS = {"name", "instances", "when", "bind", "steps"}
_STEP_KEYS = {"table", "after"}


@dataclass(frozen=True)
class Story:
    """One procedure: entity slots, instances per split, rhythm and ordered steps."""

    name: str
    kind: str  # "attack", "hard_negative" or "routine" (unlabelled normal work)
    instances: int
    when: str
    bind: dict[str, Any]
    steps: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Scenario:
    """A scenario file: the case its events are labelled with, and its stories."""

    path: Path
    case: str
    stories: tuple[Story, ...]
    #: Executables the stories need beyond the profiles' (as in the profiles, braces escaped).
    binaries: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlayedFile:
    """Rows of one (kind, case, table) written by `play`."""

    kind: str
    case: str
    table: str
    path: Path


def _where(path: Path, *parts: object) -> str:
    return f"{path}: " + ".".join(str(p) for p in parts if p != "")


def _section(kind: str) -> str:
    return next(section for section, k in _SECTIONS.items() if k == kind)


def _story(path: Path, doc: Any, kind: str, index: int | str) -> Story:
    section = _section(kind)
    where = _where(path, section, index)
    if not isinstance(doc, dict):
        raise ProfileError(f"{where}: a story is a mapping with steps")
    unknown = set(doc) - _STORY_KEYS
    if unknown:
        raise ProfileError(f"{where}: unknown keys {sorted(unknown)}; a story has {sorted(_STORY_KEYS)}")
    steps = doc.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ProfileError(f"{where}.steps: at least one step is required")
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or not isinstance(step.get("table"), str):
            raise ProfileError(f"{where}.steps.{i}: a step is a mapping with a table")
        if "bind" in step:
            raise ProfileError(f"{where}.steps.{i}.bind: bind entities on the story, once for all its steps")
        after = step.get("after", [0, 0])
        if (
            not isinstance(after, list)
            or len(after) != 2
            or not all(isinstance(a, int | float) and a >= 0 for a in after)
            or after[0] > after[1]
        ):
            raise ProfileError(f"{where}.steps.{i}.after: expected [min, max] seconds")
    bind = doc.get("bind") or {}
    if not isinstance(bind, dict):
        raise ProfileError(f"{where}.bind: expected a mapping of name -> pool selector or list")
    instances = doc.get("instances", 1)
    if not isinstance(instances, int) or instances < 1:
        raise ProfileError(f"{where}.instances: expected a positive integer")
    return Story(
        str(doc.get("name") or f"{section}{index}"),
        kind,
        instances,
        str(doc.get("when", "always")),
        bind,
        tuple(_escape_braces(steps)),
    )


def load_scenario(path: Path) -> Scenario:
    """Read and check the structure of one scenario file (templates are checked by `play`)."""
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER) or {}
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: invalid YAML: {exc}") from exc
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror}") from exc
    if not isinstance(doc, dict):
        raise ProfileError(f"{path}: a scenario is a mapping with case, attack, lookalikes")
    unknown = set(doc) - {"case", "sources", "attack", "lookalikes", "routine", "background", "binaries"}
    if unknown:
        raise ProfileError(f"{path}: unknown sections {sorted(unknown)}")
    case = str(doc.get("case") or path.stem)
    attack = doc.get("attack")
    if attack is None:
        raise ProfileError(f"{path}: attack: the scenario has no attack story")
    attacks = attack if isinstance(attack, list) else [attack]
    stories = [
        _story(path, s, "attack", i if isinstance(attack, list) else "") for i, s in enumerate(attacks)
    ]
    for section in ("lookalikes", "routine"):
        listed = doc.get(section) or []
        if not isinstance(listed, list):
            raise ProfileError(f"{path}: {section}: expected a list of stories")
        stories += [_story(path, s, _SECTIONS[section], i) for i, s in enumerate(listed)]
    binaries = doc.get("binaries") or {}
    return Scenario(
        path, case, tuple(stories), _escape_braces(dict(binaries)) if isinstance(binaries, dict) else {}
    )


def scenario_files(scenarios_dir: Path | None) -> list[Path]:
    """The scenario files of a dataset, sorted (none when the folder is absent)."""
    if scenarios_dir is None or not Path(scenarios_dir).is_dir():
        return []
    return sorted(Path(scenarios_dir).glob("*.yaml"))


class Player:
    """Plays stories for one split: table engines, clock and ids shared by all scenarios."""

    def __init__(
        self,
        profiles_dir: Path,
        schemas_dir: Path,
        scenarios_dir: Path,
        seed: int,
        window: tuple[datetime, datetime],
        split: int,
        splits: int,
    ) -> None:
        self.profile = load_profiles(profiles_dir, scenarios_dir)
        self.schemas = _load_schemas(schemas_dir)
        self.clock = _Clock(window, self.profile.get("rhythms") or {"always": {}})
        self.ids = _ReportIds(seed)
        self.seed = seed
        self.split, self.splits = split, splits
        self.pools: dict[str, list[Any]] = dict(self.profile.get("pools") or {})
        self.engines: dict[str, _TableGenerator] = {}
        self.tokens: dict[str, dict[str, Any]] = {}

    def engine(self, table: str, where: str) -> _TableGenerator:
        found = self.engines.get(table)
        if found is not None:
            return found
        specs = self.profile.get("tables") or {}
        if table not in specs or table not in self.schemas:
            raise ProfileError(f"{where}: unknown table {table!r} (no generator profile or schema)")
        shard = SCENARIO_SHARD + sorted(self.schemas).index(table)
        engine = _TableGenerator(
            table,
            self.profile,
            specs[table],
            self.schemas[table],
            self.clock,
            self.seed,
            self.ids,
            SCENARIO_STREAM,
            shard,
            "jsonl",
        )
        self.engines[table] = engine
        self.tokens[table] = {}
        return engine

    def candidates(self, selector: Any, where: str) -> list[Any]:
        """The entries a slot may take in this split (dealt out when there are enough)."""
        if isinstance(selector, list):
            items = list(selector)
        elif isinstance(selector, str):
            head, _, rest = selector.partition("[")
            head = head.strip()
            if head not in self.pools:
                raise ProfileError(f"{where}: unknown pool {head!r}; pools: {sorted(self.pools)}")
            items = self.pools[head]
            if rest:
                items = _select(items, rest.rstrip("]"), where)
        else:
            raise ProfileError(f"{where}: expected a pool selector or a list of alternatives")
        if not items:
            raise ProfileError(f"{where}: selects nothing")
        if len(items) >= self.splits:
            items = items[self.split :: self.splits]
        return items

    def start(self, rng: Random, rhythm: str, span_ms: int, where: str) -> int:
        if rhythm not in self.clock.rhythms:
            raise ProfileError(f"{where}.when: unknown rhythm {rhythm!r}")
        cdf, starts, widths = self.clock.rhythms[rhythm]
        for _ in range(_PLACEMENT_TRIES):
            h = min(len(starts) - 1, bisect_right(cdf, rng.random() * cdf[-1]))
            t = starts[h] + int(rng.random() * widths[h])
            if t + span_ms < self.clock.end:
                return t
        raise ProfileError(f"{where}: its steps do not fit inside the dataset window")

    def play(self, scenario: Scenario, story: Story, instance: int) -> list[tuple[str, str]]:
        """One instance of *story*: ``(table, JSON line)`` in time order."""
        where = _where(scenario.path, _section(story.kind), story.name)
        rng = Random(f"{self.seed}:{scenario.case}:{story.kind}:{story.name}:{instance}")
        extra = {
            var: _escape_braces(rng.choice(self.candidates(sel, f"{where}.bind.{var}")))
            for var, sel in story.bind.items()
        }
        compiled = []
        span = 0
        for i, step in enumerate(story.steps):
            engine = self.engine(step["table"], f"{where}.steps.{i}")
            spec = {k: v for k, v in step.items() if k not in _STEP_KEYS}
            spec.setdefault("name", f"{scenario.case}: {story.name}: step {i}")
            try:
                tpl = engine._template(i, spec, "always")
                rows = engine._compile(tpl, [], extra)
            except ProfileError as exc:
                raise ProfileError(f"{where}.steps.{i}: {exc}") from None
            lo, hi = step.get("after", [0, 0])
            gap = (lo + rng.random() * (hi - lo)) * 1000
            span += int(gap) + len(rows) * tpl.gap[1]
            compiled.append((engine, tpl, rows, gap))
        t = self.start(rng, story.when, span, where)
        out: list[tuple[str, str]] = []
        for i, (engine, tpl, rows, gap) in enumerate(compiled):
            if i:
                t += int(gap)
            times = [t]
            for _ in range(len(rows) - 1):
                t += tpl.gap[0] + int(rng.random() * (tpl.gap[1] - tpl.gap[0] + 1))
                times.append(t)
            memo: dict[str, Any] = {"__t0": times[0], "__rows": times}
            tokens = self.tokens[engine.table]
            for row, when in zip(rows, times, strict=True):
                if row.emit is None:
                    row.emit = engine._emitter(row, tpl, tokens)
                out.append((engine.table, row.emit(when, memo)))
        return out

    def play_scenario(self, scenario: Scenario, out_dir: Path) -> list[PlayedFile]:
        """Every story instance of *scenario*, written as JSONL under *out_dir*.

        One file per (kind, table): ``attack/<case>/<Table>.jsonl``,
        ``benign/<case>/<Table>.jsonl`` or ``routine/<case>/<Table>.jsonl``. Raises
        `ProfileError` naming the file, story and step of a template that fails; nothing
        is written then.
        """
        lines: dict[tuple[str, str], list[str]] = {}
        for story in scenario.stories:
            for instance in range(story.instances):
                for table, line in self.play(scenario, story, instance):
                    lines.setdefault((story.kind, table), []).append(line)
        written = []
        for (kind, table), rows in sorted(lines.items()):
            folder = out_dir / _FOLDERS[kind] / scenario.case
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{table}.jsonl"
            with path.open("a", encoding="utf-8") as handle:
                handle.write("".join(rows))
            written.append(PlayedFile(kind, scenario.case, table, path))
        return written
