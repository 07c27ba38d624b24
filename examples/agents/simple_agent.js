#!/usr/bin/env node
// A minimal ctirealm command agent in Node.js (20+, standard library only).
//
// It speaks the JSON-lines protocol described in docs/agents.md: one JSON
// object per line on stdin (from ctirealm) and stdout (to ctirealm); logs go
// to stderr. The analysis is deliberately naive: it only shows the protocol.
//
//   pytest --realm-agent 'command:"node examples/agents/simple_agent.js"'

"use strict";

const readline = require("node:readline");

const input = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
const lines = input[Symbol.asyncIterator]();
let nextId = 1;

function log(text) {
  process.stderr.write(`[simple_agent.js] ${text}\n`);
}

function send(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

async function receive() {
  const { value, done } = await lines.next();
  if (done) throw new Error("ctirealm closed the connection");
  return JSON.parse(value);
}

// Ask ctirealm to run one tool; resolves to the tool's result text.
async function call(name, args = {}) {
  const id = `js-${nextId++}`;
  send({ type: "tool_call", id, name, arguments: args });
  const reply = await receive();
  if (reply.type !== "tool_result" || reply.id !== id) {
    throw new Error(`unexpected reply to ${id}: ${JSON.stringify(reply)}`);
  }
  return reply.content;
}

function say(text, reasoning = "") {
  send({ type: "message", text, reasoning });
}

// Rows of a Kusto-JSON result as objects; none when the tool answered "Error: ...".
function rowsOf(result) {
  if (result.startsWith("Error")) return [];
  const table = JSON.parse(result).Tables[0];
  const names = table.Columns.map((c) => c.ColumnName);
  return table.Rows.map((row) => Object.fromEntries(names.map((n, i) => [n, row[i]])));
}

const HINTS = [
  [["kubernetes", "k8s", "pod", "cluster", "secret"], "AKSAudit"],
  [["sign-in", "signin", "login"], "SigninLogs"],
  [["azure", "subscription", "role assignment"], "AzureActivity"],
  [["file"], "DeviceFileEvents"],
];

function chooseTable(objective, tables) {
  const populated = new Set(tables.filter((t) => t.Rows > 0).map((t) => t.TableName));
  const text = objective.toLowerCase();
  for (const [words, table] of HINTS) {
    if (populated.has(table) && words.some((w) => text.includes(w))) return table;
  }
  return populated.has("DeviceProcessEvents") ? "DeviceProcessEvents" : [...populated][0];
}

async function main() {
  const task = await receive();
  if (task.type !== "task") throw new Error(`expected a task, got ${task.type}`);
  log(`case ${task.case_id}: ${task.objective}`);

  const table = chooseTable(task.objective, JSON.parse(await call("list_kusto_tables")));
  say(`Looking at ${table} for: ${task.objective}`);
  const schema = JSON.parse(await call("get_table_schema", { table_name: table }));
  const columns = schema.Columns.map((c) => c.ColumnName);
  const sample = rowsOf(await call("sample_table_data", { table_name: table, rows: 5 }));

  const query = `${table} | take 10`;
  const rows = rowsOf(await call("execute_kql_query", { query }));
  say(`${columns.length} columns, ${sample.length} sample rows, ${rows.length} query rows.`);

  const sigma = [
    `title: ${task.objective.slice(0, 70)}`,
    "status: experimental",
    `description: ${JSON.stringify(task.objective)}`,
    "logsource:",
    "  product: linux",
    "  category: process_creation",
    "detection:",
    "  selection:",
    "    CommandLine|contains: ' '",
    "  condition: selection",
    "level: low",
    "",
  ].join("\n");
  send({ type: "submit", answer: { sigma_rule: sigma, kql_query: query, query_results: rows } });
  input.close();
}

main().catch((error) => {
  log(error.stack || String(error));
  process.exit(1);
});
