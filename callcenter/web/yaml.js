// Small helpers for the flow editor: YAML highlighting (line by line, good enough for flow files) and a
// line diff (longest common subsequence).

const KEY = /^(\s*(?:-\s+)?)([A-Za-z0-9_.\-"']+)(\s*:)(?=\s|$)/;
const SCALAR = /^(\s*)("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|-?\d+(?:\.\d+)?|true|false|null|~)(\s*)$/;

function span(cls, text) {
  const node = document.createElement("span");
  node.className = cls;
  node.textContent = text;
  return node;
}

// Split off a trailing comment ("# ..." after whitespace, outside quotes).
function splitComment(line) {
  let quote = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === quote) quote = null;
    } else if (c === '"' || c === "'") {
      quote = c;
    } else if (c === "#" && (i === 0 || /\s/.test(line[i - 1]))) {
      return [line.slice(0, i), line.slice(i)];
    }
  }
  return [line, ""];
}

function value(text, out) {
  const m = SCALAR.exec(text);
  if (!m) {
    out.push(document.createTextNode(text));
    return;
  }
  const cls = m[2].startsWith('"') || m[2].startsWith("'") ? "str" : /^-?\d/.test(m[2]) ? "num" : "lit";
  out.push(document.createTextNode(m[1]), span(cls, m[2]), document.createTextNode(m[3]));
}

// Nodes for a <pre>: one span.line per line; lines in `errorLines` (1-based) get the class "err".
export function highlightYaml(text, errorLines = new Set()) {
  const lines = text.split("\n");
  return lines.map((line, i) => {
    const out = [];
    const [code, comment] = splitComment(line);
    const m = KEY.exec(code);
    if (m) {
      out.push(document.createTextNode(m[1]), span("key", m[2]), span("punct", m[3]));
      value(code.slice(m[0].length), out);
    } else {
      value(code, out);
    }
    if (comment) out.push(span("comment", comment));
    const node = document.createElement("span");
    node.className = errorLines.has(i + 1) ? "line err" : "line";
    node.append(...out, document.createTextNode(i < lines.length - 1 ? "\n" : "\n"));
    return node;
  });
}

// [[op, line]] with op " ", "-" or "+", turning `before` into `after`.
export function lineDiff(before, after) {
  const a = before.split("\n"), b = after.split("\n");
  if (a.length * b.length > 4_000_000) { // too big for the table: show everything replaced
    return [...a.map((l) => ["-", l]), ...b.map((l) => ["+", l])];
  }
  const n = a.length, m = b.length;
  const table = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      table[i][j] = a[i] === b[j] ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
    }
  }
  const out = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) { out.push([" ", a[i]]); i++; j++; }
    else if (table[i + 1][j] >= table[i][j + 1]) out.push(["-", a[i++]]);
    else out.push(["+", b[j++]]);
  }
  while (i < n) out.push(["-", a[i++]]);
  while (j < m) out.push(["+", b[j++]]);
  return out;
}
