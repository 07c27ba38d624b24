#!/usr/bin/env node
// Checks KQL queries with Microsoft's own Kusto.Language parser and semantic analyzer
// (npm: @kusto/language-service-next, the JavaScript build of Kusto.Language).
//
//   node analyze.js --schemas ../../telemetry/schemas [--schemas more.json] [--database NAME]
//   node analyze.js --version
//
// Input (stdin): JSON lines {"id": ..., "query": "..."}.
// Output (stdout): one JSON line per input line, in order:
//   {"id": ..., "diagnostics": [{"severity", "code", "category", "message",
//                                 "start", "length", "line", "column"}],
//    "columns": [[name, kusto type], ...] or null}
// `start`/`length` are offsets into the query text (UTF-16 code units), `line`/`column` are
// 1-based; `columns` is the result schema the analyzer infers for a tabular query. A line that is not a {id, query} object gets {"id": null, "error": "..."}.
//
// The database the queries run in is built from table schemas: a folder of telemetry schema
// files (`{"table": T, "columns": [[name, kusto type], ...]}`), one such file, or a file
// `{"tables": {T: [[name, kusto type], ...]}}`. Column types are taken as declared (a `long`
// column is `long`, an `int` column `int`); an unknown type is an error, not a guess.
"use strict";

const fs = require("fs");
const path = require("path");
const readline = require("readline");

const PACKAGE = "@kusto/language-service-next";

function packageDir() {
  return path.dirname(require.resolve(`${PACKAGE}/package.json`));
}

function loadKusto() {
  const dir = packageDir();
  require(path.join(dir, "bridge.min.js"));
  require(path.join(dir, "Kusto.Language.Bridge.min.js"));
  return globalThis.Kusto.Language;
}

function parseArgs(argv) {
  const args = { schemas: [], database: "ctirealm", version: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--version") args.version = true;
    else if (arg === "--schemas" && i + 1 < argv.length) args.schemas.push(argv[++i]);
    else if (arg === "--database" && i + 1 < argv.length) args.database = argv[++i];
    else throw new Error(`unknown argument ${JSON.stringify(arg)} (use --schemas PATH, --database NAME, --version)`);
  }
  return args;
}

// {table name: [[column, type], ...]} from the --schemas paths
function readSchemas(paths) {
  const tables = {};
  const addFile = (file) => {
    const data = JSON.parse(fs.readFileSync(file, "utf8"));
    if (data.tables && typeof data.tables === "object") Object.assign(tables, data.tables);
    else if (typeof data.table === "string" && Array.isArray(data.columns)) tables[data.table] = data.columns;
    else throw new Error(`${file}: neither a table schema {table, columns} nor {tables: {...}}`);
  };
  for (const p of paths) {
    if (fs.statSync(p).isDirectory()) {
      for (const name of fs.readdirSync(p).sort()) {
        if (name.endsWith(".json")) addFile(path.join(p, name));
      }
    } else addFile(p);
  }
  return tables;
}

function buildGlobals(K, tables, databaseName) {
  const S = K.Symbols;
  const symbols = [];
  for (const [table, columns] of Object.entries(tables)) {
    const cols = columns.map(([name, type]) => {
      const scalar = S.ScalarTypes.GetSymbol(String(type));
      if (!scalar || scalar === S.ScalarTypes.Unknown) {
        throw new Error(`table ${table}, column ${name}: unknown Kusto type ${JSON.stringify(type)}`);
      }
      return new S.ColumnSymbol(String(name), scalar, null, null, null, null);
    });
    symbols.push(new S.TableSymbol.$ctor4(table, cols));
  }
  const database = new S.DatabaseSymbol.$ctor2(databaseName, null, symbols);
  return K.GlobalState.Default.WithDatabase(database);
}

function lineColumn(text, offset) {
  let line = 1;
  let last = -1;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      last = i;
    }
  }
  return [line, offset - last];
}

function resultColumns(code) {
  const type = code.ResultType;
  if (!type || !type.Columns) return null;
  const out = [];
  for (let i = 0; i < type.Columns.Count; i++) {
    const column = type.Columns.getItem(i);
    out.push([column.Name, column.Type ? column.Type.Name : null]);
  }
  return out;
}

function analyze(K, globals, query) {
  const code = K.KustoCode.ParseAndAnalyze(query, globals);
  const diagnostics = code.GetDiagnostics();
  const out = [];
  for (let i = 0; i < diagnostics.Count; i++) {
    const d = diagnostics.getItem(i);
    const [line, column] = lineColumn(query, d.Start);
    out.push({
      severity: d.Severity,
      code: d.Code,
      category: d.Category,
      message: d.Message,
      start: d.Start,
      length: d.Length,
      line,
      column,
    });
  }
  return { diagnostics: out, columns: resultColumns(code) };
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.version) {
    const meta = JSON.parse(fs.readFileSync(path.join(packageDir(), "package.json"), "utf8"));
    process.stdout.write(`${meta.name} ${meta.version}\n`);
    return;
  }
  if (args.schemas.length === 0) throw new Error("--schemas PATH is required");
  const K = loadKusto();
  const globals = buildGlobals(K, readSchemas(args.schemas), args.database);
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  rl.on("line", (line) => {
    if (!line.trim()) return;
    let record;
    try {
      record = JSON.parse(line);
    } catch (err) {
      process.stdout.write(JSON.stringify({ id: null, error: `not JSON: ${err.message}` }) + "\n");
      return;
    }
    if (!record || typeof record.query !== "string") {
      const id = record && record.id !== undefined ? record.id : null;
      process.stdout.write(JSON.stringify({ id, error: "expected {id, query}" }) + "\n");
      return;
    }
    let result;
    try {
      result = { id: record.id, ...analyze(K, globals, record.query) };
    } catch (err) {
      result = { id: record.id, error: `analyzer failed: ${err && err.message ? err.message : err}` };
    }
    process.stdout.write(JSON.stringify(result) + "\n");
  });
}

try {
  main();
} catch (err) {
  process.stderr.write(`kql-analyzer: ${err && err.message ? err.message : err}\n`);
  process.exit(2);
}
