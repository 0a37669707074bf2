"use strict";
// The live page: pick a graph, fill its input, run it, watch it stream.
//
// - Every API call is relative to the page (a proxy's prefix is kept) and carries the key typed
//   into `api-key` (kept in sessionStorage for the tab) as `Authorization: Bearer`. Streams use
//   the run's signed `stream_url`, so a key never goes into a URL.
// - The run being watched and every event received so far (with the id of the last) are kept in
//   sessionStorage: a reload redraws them and re-attaches with `?last_event_id=`, so nothing is
//   lost or repeated. A dropped connection is retried by EventSource with `Last-Event-ID`.
// - An SSE event named `error` reaches `onerror` as a MessageEvent (README, "Clients: browsers
//   and Python"): it is the run's error, and `end` follows; the page closes on `end` only.

const $ = (id) => document.getElementById(id);
const KEY = "lgstream.key";
const RUN = "lgstream.run";
const TYPES = ["metadata", "node_start", "token", "tool_start", "tool_end", "custom", "update",
               "values", "node_end", "interrupt"];

let graphs = {};      // name -> its entry in GET /graphs
let run = null;       // {run_id, thread_id, graph, stream_url, cancel_url, last_id, events, ended}
let source = null;    // the EventSource reading `run`
let saveTimer = null;
let view = null;      // what render() draws into: the answer's text node, open nodes and tools

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(method, url, body) {
  const headers = {"Content-Type": "application/json"};
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = "Bearer " + key;
  const response = await fetch(url, {method, headers,
                                     body: body === undefined ? undefined : JSON.stringify(body)});
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = (data && data.error) || {code: "http_" + response.status, message: ""};
    throw new ApiError(response.status, error.code, error.message);
  }
  return data;
}

function setStatus(word, detail) {
  $("status").textContent = detail ? `${word} (${detail})` : word;
  $("status").className = word;
}

function setRunning(running) {
  $("run").disabled = running;
  $("stop").disabled = !running;
}

// --- graphs and the input form -------------------------------------------------------------

function resolve(schema, root) {
  while (schema && schema.$ref) schema = root.$defs[schema.$ref.split("/").pop()];
  return schema || {};
}

async function loadGraphs() {
  let data;
  try {
    data = await api("GET", "graphs");
  } catch (error) {
    setStatus("unauthorized", error.status === 401 ? "enter the API key" : error.message);
    return false;
  }
  graphs = Object.fromEntries(data.graphs.map((g) => [g.name, g]));
  const select = $("graph-select");
  const chosen = select.value;
  select.replaceChildren(...data.graphs.map((g) => new Option(g.name, g.name)));
  if (chosen in graphs) select.value = chosen;
  if (!run) setStatus("idle");
  renderForm();
  return true;
}

function renderForm() {
  const graph = graphs[$("graph-select").value];
  $("form").replaceChildren();
  if (!graph) return;
  $("description").textContent = graph.description || "";
  const schema = graph.input_schema;
  for (const [name, declared] of Object.entries(schema.properties || {})) {
    const prop = resolve(declared, schema);
    const text = prop.type === "string";
    const field = document.createElement(text ? "input" : "textarea");
    field.name = name;
    field.dataset.testid = "field-" + name;
    if (!text) {
      field.rows = 3;
      field.placeholder = messagesField(prop, schema)
        ? "a message, or JSON such as [{\"role\": \"user\", \"content\": \"...\"}]"
        : "JSON";
    }
    const label = document.createElement("label");
    label.append(prop.title || name, field);
    $("form").append(label);
  }
}

function messagesField(prop, schema) {
  return prop.type === "array" && "content" in (resolve(prop.items, schema).properties || {});
}

function formInput() {
  const schema = graphs[$("graph-select").value].input_schema;
  const input = {};
  for (const field of $("form").elements) {
    const prop = resolve(schema.properties[field.name], schema);
    if (field.value === "" && !(schema.required || []).includes(field.name)) continue;
    if (prop.type === "string") { input[field.name] = field.value; continue; }
    try {
      input[field.name] = JSON.parse(field.value);
    } catch {  // not JSON: a message field takes plain text as one user message
      input[field.name] = messagesField(prop, schema)
        ? [{role: "user", content: field.value}] : field.value;
    }
  }
  return input;
}

// --- runs ----------------------------------------------------------------------------------

async function start(graph, body) {
  closeSource();
  let created;
  try {
    created = await api("POST", `graphs/${encodeURIComponent(graph)}/runs`, body);
  } catch (error) {
    setStatus(error.status === 401 ? "unauthorized" : "failed", `${error.code}: ${error.message}`);
    return;
  }
  run = {...created, graph, last_id: 0, events: [], ended: false};
  save();
  redraw();
  attach();
}

function attach() {
  const url = new URL(run.stream_url, location.href);
  if (run.last_id) url.searchParams.set("last_event_id", run.last_id);
  const watching = run;
  source = new EventSource(url);
  for (const type of [...TYPES, "end"]) {
    source.addEventListener(type, (e) => receive(watching, type, e));
  }
  source.onerror = (e) => {
    if (e instanceof MessageEvent) receive(watching, "error", e);  // the run's error: end follows
    else if (source && source.readyState === EventSource.CLOSED) refused(watching);
  };  // else: dropped; EventSource reconnects with Last-Event-ID by itself
  setRunning(true);
}

function receive(watching, type, e) {
  if (watching !== run) return;  // a stream we already left
  const id = Number(e.lastEventId);
  if (id && id <= run.last_id) return;
  if (id) run.last_id = id;
  const event = [Date.now(), type, JSON.parse(e.data)];
  run.events.push(event);
  render(event);
  if (type === "end") {
    closeSource();
    run.ended = true;
    save();
  } else if (saveTimer === null) {
    saveTimer = setTimeout(save, 250);
  }
}

async function refused(watching) {
  // Not an event stream: a 204 (the run had already ended), 401 or 404. Ask the run itself.
  closeSource();
  try {
    const record = await api("GET", `runs/${encodeURIComponent(watching.run_id)}`);
    setStatus(record.status, record.error ? record.error.code : "the stream was refused");
  } catch (error) {
    setStatus("failed", `${error.code}: ${error.message}`);
  }
}

function closeSource() {
  if (source) source.close();
  source = null;
  setRunning(false);
}

async function stop() {
  if (!run || run.ended) return;
  $("stop").disabled = true;
  setStatus("stopping");
  try {
    await api("POST", run.cancel_url, {action: "interrupt"});
  } catch (error) {
    setStatus("failed", `${error.code}: ${error.message}`);
  }  // the run's `end {status: "cancelled"}` follows on the stream and closes it
}

function resume(value) {
  $("review").hidden = true;
  start(run.graph, {thread_id: run.thread_id, resume: value});
}

function save() {
  clearTimeout(saveTimer);
  saveTimer = null;
  if (run) sessionStorage.setItem(RUN, JSON.stringify(run));
}

// --- drawing -------------------------------------------------------------------------------

function redraw() {
  const answer = document.createTextNode("");
  $("answer").replaceChildren(answer);
  $("timeline").replaceChildren();
  $("review").hidden = true;
  view = {answer, nodes: new Map(), tools: new Map(), error: null, interrupt: null};
  setStatus("running");
  for (const event of run.events) render(event);
}

function row(kind, at, title, detail, ns) {
  const li = document.createElement("li");
  li.className = kind;
  li.style.marginLeft = `${(ns || []).length * 1.5}rem`;
  const when = document.createElement("span");
  when.className = "when";
  when.textContent = at + " ";
  const head = document.createElement("span");
  head.className = "title";
  head.textContent = title;
  li.append(when, head);
  if (detail) addDetail(li, detail);
  $("timeline").append(li);
  return li;
}

function addDetail(li, text) {
  const detail = document.createElement("div");
  detail.className = "detail";
  detail.textContent = text.length > 400 ? text.slice(0, 400) + "…" : text;
  li.append(detail);
}

const json = (value) => JSON.stringify(value);

function render([t, type, data]) {
  const at = `+${((t - run.events[0][0]) / 1000).toFixed(2)}s`;
  const path = (d) => [...d.ns, d.node].join(" / ");
  switch (type) {
    case "metadata":
      row("node", at, `run ${data.run_id} on ${data.graph}`, `thread ${data.thread_id}`);
      break;
    case "token":
      view.answer.appendData(data.text);
      break;
    case "node_start": {
      const li = row("node", at, `▶ ${path(data)} (step ${data.step})`, "", data.ns);
      const open = view.nodes.get(path(data)) || [];
      view.nodes.set(path(data), [...open, li]);
      break;
    }
    case "node_end": {
      const open = view.nodes.get(path(data)) || [];
      const li = open.shift() || row("node", at, `▶ ${path(data)}`, "", data.ns);
      li.querySelector(".title").textContent += ` → ended ${at}, ${data.elapsed_ms} ms`;
      break;
    }
    case "tool_start":
      view.tools.set(data.call_id,
                     row("tool", at, `tool ${data.tool}`, `input ${json(data.input)}`, data.ns));
      break;
    case "tool_end": {
      const li = view.tools.get(data.call_id) || row("tool", at, `tool ${data.tool}`, "", data.ns);
      addDetail(li, `output ${json(data.output)} (${at})`);
      break;
    }
    case "custom":
      row("custom", at, `custom ${data.name || ""} from ${path(data)}`, json(data.data), data.ns);
      break;
    case "update":
      row("update", at, `update from ${path(data)}`, json(data.values), data.ns);
      break;
    case "values":
      row("update", at, "values", json(data.values));
      break;
    case "interrupt":
      view.interrupt = data.value;
      row("custom", at, `interrupt at ${path(data)}`, json(data.value), data.ns);
      break;
    case "error":
      view.error = data;
      row("error", at, `error ${data.code}`, data.message);
      break;
    case "end":
      end(at, data);
      break;
  }
}

function end(at, data) {
  const detail = data.status === "failed" ? (view.error ? view.error.code : data.reason)
    : data.status === "cancelled" ? data.reason : "";
  row("end", at, `end: ${data.status}`, `${data.elapsed_ms} ms, usage ${json(data.usage)}`);
  setStatus(data.status, detail);
  if (data.status === "paused" && view.interrupt !== null) {
    const value = view.interrupt;
    $("interrupt").textContent = typeof value === "object" && value && "draft" in value
      ? `${value.question || ""}\n\n${value.draft}` : json(value);
    $("feedback").value = "";
    $("review").hidden = false;
  }
}

// --- wiring --------------------------------------------------------------------------------

let keyTimer = null;
$("api-key").value = sessionStorage.getItem(KEY) || "";
$("api-key").addEventListener("input", () => {
  sessionStorage.setItem(KEY, $("api-key").value);
  clearTimeout(keyTimer);
  keyTimer = setTimeout(loadGraphs, 200);
});
$("graph-select").addEventListener("change", renderForm);
$("run").addEventListener("click", () => {
  const graph = $("graph-select").value;
  if (graph in graphs) start(graph, {input: formInput()});
});
$("stop").addEventListener("click", stop);
$("approve").addEventListener("click", () => resume({approved: true}));
$("revise").addEventListener("click", () => resume({approved: false,
                                                     feedback: $("feedback").value}));
window.addEventListener("pagehide", save);

(async () => {
  const saved = sessionStorage.getItem(RUN);
  const loaded = await loadGraphs();
  if (!saved) return;
  run = JSON.parse(saved);
  if (loaded && run.graph in graphs) {
    $("graph-select").value = run.graph;
    renderForm();
  }
  redraw();
  if (!run.ended) attach();
})();
