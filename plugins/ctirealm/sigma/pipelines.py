"""pySigma processing pipelines mapping Sigma logsources and fields to the telemetry tables.

The mapping is data: ``tables.yaml`` beside this module says which logsources feed which table
and how Sigma field names resolve to KQL column expressions. `build_pipeline` turns it, together
with the tables' schemas, into one `ProcessingPipeline` of pySigma items:

1. one ``set_state`` item per table (``ctirealm_table``), conditioned on its logsources;
2. a failure item for any rule no table claimed, naming the logsource and the supported ones;
3. ``add_condition`` items for logsources that narrow a shared table (Key Vault inside
   AzureDiagnostics);
4. one field-mapping item per table that resolves every field of the rule, records what it
   resolved to (type and kind) in the pipeline state for the backend, and fails on an unknown
   field, naming it, the table and the closest names.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaTransformationError
from sigma.processing.conditions import LogsourceCondition, RuleProcessingItemAppliedCondition
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import (
    AddConditionTransformation,
    PreprocessingTransformation,
    SetStateTransformation,
)
from sigma.processing.transformations.base import FieldMappingTransformationBase
from sigma.rule import SigmaRule

from ..telemetry.schema import TableSchema
from .spec import PipelineSpecError, load_spec

Kind = Literal["scalar", "list", "json", "elements"]

#: Pipeline state keys the backend reads.
STATE_TABLE = "ctirealm_table"
STATE_FIELDS = "ctirealm_fields"

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FLATTEN_TYPES = {"_s": "string", "_g": "guid", "_d": "real", "_b": "bool", "_t": "datetime"}


@dataclass(frozen=True)
class FieldTarget:
    """What a Sigma field resolved to: a KQL expression, its Kusto type and its kind."""

    field: str
    expr: str
    type: str
    kind: Kind
    how: str
    #: kind "elements": how to reach the array's elements (see `TableSpec.element_target`).
    elements: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # `field` is shadowed here

    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"field": self.field, "type": self.type, "kind": self.kind, "how": self.how}
        return {**state, **self.elements}


@dataclass(frozen=True)
class LogsourceSpec:
    product: str | None = None
    category: str | None = None
    service: str | None = None
    conditions: Mapping[str, Any] = field(default_factory=dict)

    def label(self) -> str:
        parts = [
            f"{k}: {v}"
            for k, v in (("product", self.product), ("category", self.category), ("service", self.service))
            if v
        ]
        return "{" + ", ".join(parts) + "}"


@dataclass(frozen=True)
class TableSpec:
    """One table's part of the spec, bound to its schema (ordered ``(column, kusto_type)``)."""

    table: str
    columns: tuple[tuple[str, str], ...]
    logsources: tuple[LogsourceSpec, ...]
    aliases: Mapping[str, Any]
    strip_prefixes: tuple[str, ...] = ()
    dynamic_roots: Mapping[str, str] = field(default_factory=dict)
    arrays: tuple[str, ...] = ()
    flatten_suffixes: tuple[str, ...] = ()
    array_keys: Mapping[str, Sequence[str]] = field(default_factory=dict)
    row_key: str | None = None
    unmapped: Mapping[str, str] = field(default_factory=dict)

    # -- look-ups --------------------------------------------------------------

    @property
    def types(self) -> dict[str, str]:
        return dict(self.columns)

    def _column_ci(self, name: str) -> str | None:
        folded = name.casefold()
        for column, _ in self.columns:
            if column.casefold() == folded:
                return column
        return None

    def _alias_ci(self, name: str) -> str | None:
        if name in self.aliases:
            return name
        folded = name.casefold()
        for alias in self.aliases:
            if alias.casefold() == folded:
                return alias
        return None

    def _from_alias(self, name: str, alias: str) -> FieldTarget:
        target = self.aliases[alias]
        if isinstance(target, str):
            if target in self.types:
                return self._from_column(name, target, how=f"alias of {target}")
            raise PipelineSpecError(
                f"{self.table}: field {alias!r} maps to {target!r}, which is not a column"
            )
        if "element" in target:
            return self.element_target(
                name,
                str(target["element"]),
                str(target["value"]),
                where=dict(target.get("where") or {}),
                unquote=bool(target.get("unquote")),
            )
        expr = str(target["expr"])
        kind = target.get("kind", "scalar")
        return FieldTarget(name, expr, str(target.get("type", "string")), kind, "expression")

    def _from_column(self, name: str, column: str, how: str = "column") -> FieldTarget:
        kusto_type = self.types[column]
        if kusto_type == "dynamic":
            return FieldTarget(name, f"tostring({column})", "string", "json", how)
        return FieldTarget(name, column, kusto_type, "scalar", how)

    def _dynamic_root(self, head: str) -> str | None:
        for root, root_column in self.dynamic_roots.items():
            if root.casefold() == head.casefold():
                return root_column
        column = self._column_ci(head)
        if column is not None and self.types[column] == "dynamic":
            return column
        return None

    def resolve(self, name: str, *, _depth: int = 0) -> FieldTarget:
        """Resolve a Sigma field name; `UnknownField` when nothing matches."""
        if name in self.aliases:
            return self._from_alias(name, name)
        if name in self.types:
            return self._from_column(name, name)
        alias = self._alias_ci(name)
        if alias is not None:
            return self._from_alias(name, alias)
        column = self._column_ci(name)
        if column is not None:
            return self._from_column(name, column)
        for prefix in self.strip_prefixes:
            if name.casefold().startswith(prefix.casefold()) and len(name) > len(prefix):
                try:
                    found = self.resolve(name[len(prefix) :], _depth=_depth + 1)
                except UnknownField:
                    break
                return FieldTarget(
                    name,
                    found.expr,
                    found.type,
                    found.kind,
                    f"{found.how} (after removing {prefix!r})",
                    found.elements,
                )
        if "." in name:
            head, *path = name.split(".")
            root = self._dynamic_root(head)
            if root is not None and all(path):
                if root in self.arrays:
                    return self._array_path(name, root, path)
                expr = (
                    "tostring("
                    + root
                    + "".join(
                        f".{p}" if _IDENT.match(p) else "['" + p.replace("'", "\\'") + "']" for p in path
                    )
                    + ")"
                )
                return FieldTarget(name, expr, "string", "scalar", f"path in dynamic {root}")
        for unmapped, reason in self.unmapped.items():
            if unmapped.casefold() == name.casefold():
                raise UnknownField(self, name, reason)
        if self.flatten_suffixes:
            flat = re.sub(r"[^A-Za-z0-9_]", "_", name)
            for suffix in self.flatten_suffixes:
                column = self._column_ci(flat + suffix)
                if column is not None:
                    return self._from_column(name, column, how=f"flattened column {column}")
        raise UnknownField(self, name)

    def _key(self, array: str, key: str) -> str:
        """*key* spelt as the elements of *array* spell it (Sigma rules vary the case)."""
        for known in self.array_keys.get(array, ()):
            if known.casefold() == key.casefold():
                return known
        return key

    def _array_path(self, name: str, root: str, path: list[str]) -> FieldTarget:
        # Walk the path, entering the nested arrays the spec declares (`array_keys` entries).
        array, rest = root, list(path)
        while rest:
            step = self._key(array, rest[0])
            if f"{array}.{step}" not in self.array_keys:
                break
            array, rest = f"{array}.{step}", rest[1:]
        if not rest:
            return FieldTarget(
                name, f"tostring({root})", "string", "json", f"JSON text of the array column {root}"
            )
        value = ".".join(self._key(array, k) if i == 0 else k for i, k in enumerate(rest))
        return self.element_target(name, array, value)

    def element_target(
        self,
        name: str,
        array: str,
        value: str,
        *,
        where: Mapping[str, str] | None = None,
        unquote: bool = False,
    ) -> FieldTarget:
        """A value inside the elements of a JSON array column (``array`` a dotted path through
        nested arrays): matches when an element's *value* matches, among the elements whose keys
        equal *where*. Needs the table's `row_key` to bring the matched rows back."""
        if self.row_key is None:
            raise PipelineSpecError(f"{self.table}: array fields need `row_key`")
        head = array.split(".")[0]
        # a string column holding JSON (OfficeActivity's ExtendedProperties) is parsed first
        dynamic = self.types.get(head) == "dynamic"
        spec = {
            "array": array,
            "value": value,
            "where": dict(where or {}),
            "unquote": unquote,
            "table": self.table,
            "row_key": self.row_key,
            "source": head if dynamic else f"todynamic({head})",
            "text": f"tostring({head})" if dynamic else head,
        }
        expr = f"{array}[*].{value}" + "".join(f"[{k}={v}]" for k, v in sorted((where or {}).items()))
        return FieldTarget(name, expr, "string", "elements", f"elements of the array {array}", spec)

    def known_names(self) -> list[str]:
        return sorted({*self.aliases, *self.types}, key=str.casefold)


class UnknownField(SigmaTransformationError):
    """A Sigma field that resolves to no column of the rule's table."""

    def __init__(self, spec: TableSpec, name: str, reason: str | None = None) -> None:
        self.table = spec.table
        self.field = name
        if reason is not None:
            super().__init__(f"unknown field {name!r}: no column of {spec.table} holds it: {reason}")
            return
        close = difflib.get_close_matches(name, spec.known_names(), n=3, cutoff=0.6)
        if not close:
            folded = {n.casefold(): n for n in spec.known_names()}
            close = [
                folded[c] for c in difflib.get_close_matches(name.casefold(), list(folded), n=3, cutoff=0.6)
            ]
        hint = f"; closest: {', '.join(close)}" if close else ""
        super().__init__(f"unknown field {name!r}: no column of {spec.table} holds it{hint}")


# -- the spec file ---------------------------------------------------------------


SchemaMap = Mapping[str, TableSchema | Sequence[tuple[str, str]]]


def table_specs(schemas: SchemaMap, spec: Mapping[str, Any] | None = None) -> dict[str, TableSpec]:
    """Bind the spec to *schemas*; tables without a schema are left out."""
    doc = spec if spec is not None else load_spec()
    out: dict[str, TableSpec] = {}
    for table, entry in doc["tables"].items():
        schema = schemas.get(table)
        if schema is None:
            continue
        columns = tuple(
            schema.columns if isinstance(schema, TableSchema) else ((str(c), str(t)) for c, t in schema)
        )
        logsources = tuple(
            LogsourceSpec(
                ls.get("product"), ls.get("category"), ls.get("service"), dict(ls.get("conditions") or {})
            )
            for ls in entry["logsources"]
        )
        out[table] = TableSpec(
            table=table,
            columns=columns,
            logsources=logsources,
            aliases=dict(entry.get("fields") or {}),
            strip_prefixes=tuple(entry.get("strip_prefixes") or ()),
            dynamic_roots=dict(entry.get("dynamic_roots") or {}),
            arrays=tuple(entry.get("arrays") or ()),
            flatten_suffixes=tuple(entry.get("flatten_suffixes") or ()),
            array_keys={k: tuple(v) for k, v in (entry.get("array_keys") or {}).items()},
            row_key=entry.get("row_key"),
            unmapped=dict(entry.get("unmapped") or {}),
        )
    return out


def supported_logsources(specs: Mapping[str, TableSpec]) -> list[tuple[LogsourceSpec, str]]:
    """Every ``(logsource, table)`` pair, in spec order."""
    return [(ls, spec.table) for spec in specs.values() for ls in spec.logsources]


# -- pipeline items ----------------------------------------------------------------


@dataclass
class UnsupportedLogsource(PreprocessingTransformation):
    """Fails a rule whose logsource no table claims, listing the supported logsources."""

    supported: tuple[str, ...] = ()

    def apply(self, rule: SigmaRule | SigmaCorrelationRule) -> None:
        super().apply(rule)
        if isinstance(rule, SigmaRule):
            ls = rule.logsource
            given = {
                k: v
                for k, v in (("product", ls.product), ("category", ls.category), ("service", ls.service))
                if v
            }
            label = "{" + ", ".join(f"{k}: {v}" for k, v in given.items()) + "}"
        else:
            label = "(correlation rule)"
        raise SigmaTransformationError(
            f"unsupported logsource {label}: no telemetry table holds these events; "
            f"supported: {'; '.join(self.supported)}"
        )


@dataclass
class MapTableFields(FieldMappingTransformationBase):
    """Resolves every field of a rule against one table, recording what it resolved to."""

    spec: TableSpec | None = None

    def apply_field_name(self, field: str | None) -> str | None:
        if self.spec is None:  # pragma: no cover - always set by build_pipeline
            return None
        if field is None:
            raise SigmaTransformationError(
                "keyword (field-less) detection values are not supported: KQL matches columns, "
                f"so name the {self.spec.table} column the keyword should be found in "
                "(e.g. `<column>|contains: <keyword>`)"
            )
        target = self.spec.resolve(field)
        if self._pipeline is not None:
            known = self._pipeline.state.setdefault(STATE_FIELDS, {})
            known.setdefault(target.expr, target.to_state())
        return target.expr

    def apply(self, rule: SigmaRule | SigmaCorrelationRule) -> None:
        # The optional `fields:` list only names output columns: map what resolves, keep the rest.
        listed = list(rule.fields)
        rule.fields = []
        super().apply(rule)
        mapped = []
        for name in listed:
            try:
                mapped.append(self.spec.resolve(name).expr if self.spec else name)
            except SigmaTransformationError:
                mapped.append(name)
        rule.fields = mapped


def build_pipeline(schemas: SchemaMap, spec: Mapping[str, Any] | None = None) -> ProcessingPipeline:
    """The ctirealm processing pipeline for tables with a schema in *schemas*."""
    return pipeline_from_specs(table_specs(schemas, spec))


def pipeline_from_specs(specs: Mapping[str, TableSpec]) -> ProcessingPipeline:
    """A fresh pipeline (pySigma pipelines hold per-rule state) from bound table specs."""
    items: list[ProcessingItem] = []
    for table, tspec in specs.items():
        items.append(
            ProcessingItem(
                identifier=f"ctirealm_table_{table}",
                transformation=SetStateTransformation(STATE_TABLE, table),
                rule_conditions=[
                    LogsourceCondition(ls.category, ls.product, ls.service) for ls in tspec.logsources
                ],
                rule_condition_linking=any,
            )
        )
    supported = tuple(f"{ls.label()} -> {table}" for ls, table in supported_logsources(specs))
    items.append(
        ProcessingItem(
            identifier="ctirealm_unsupported_logsource",
            transformation=UnsupportedLogsource(supported),
            rule_conditions=[RuleProcessingItemAppliedCondition(f"ctirealm_table_{t}") for t in specs],
            rule_condition_linking=any,
            rule_condition_negation=True,
        )
    )
    for table, tspec in specs.items():
        for ls in tspec.logsources:
            if ls.conditions:
                items.append(
                    ProcessingItem(
                        identifier=f"ctirealm_condition_{table}_{ls.service or ls.category}",
                        transformation=AddConditionTransformation(
                            dict(ls.conditions), name=f"_ctirealm_{ls.service or ls.category}"
                        ),
                        rule_conditions=[LogsourceCondition(ls.category, ls.product, ls.service)],
                    )
                )
    for table, tspec in specs.items():
        items.append(
            ProcessingItem(
                identifier=f"ctirealm_fields_{table}",
                transformation=MapTableFields(spec=tspec),
                rule_conditions=[RuleProcessingItemAppliedCondition(f"ctirealm_table_{table}")],
            )
        )
    return ProcessingPipeline(name="ctirealm telemetry tables", priority=20, items=items)


def field_table(specs: Iterable[TableSpec]) -> list[dict[str, str]]:
    """Rows ``{table, field, expr, type, kind}`` of every alias, for docs and the CLI."""
    rows = []
    for tspec in specs:
        for name in tspec.aliases:
            target = tspec.resolve(name)
            rows.append(
                {
                    "table": tspec.table,
                    "field": name,
                    "expr": target.expr,
                    "type": target.type,
                    "kind": target.kind,
                }
            )
    return rows
