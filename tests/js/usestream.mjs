// The React `useStream` hook itself, headless: React 19 rendering into a jsdom document in Node.
//
//   node usestream.mjs URL [API_KEY]
//
// A component calls useStream({apiUrl, assistantId: "chat"}) and reads `messages` and `values`
// (which is what makes the hook ask for "messages-tuple" and "values"). It submits a short run
// and records what each render showed; then submits a long run and calls `stop()` after a few
// tokens (the hook aborts its fetch; the run was sent with on_disconnect "cancel"). Prints one
// JSON object: the renders' summary, the requests the hook made, the stopped run's status.
import { JSDOM } from "jsdom";

const [apiUrl, apiKey] = process.argv.slice(2);
if (!apiUrl) {
  console.error("usage: node usestream.mjs URL [API_KEY]");
  process.exit(2);
}

const dom = new JSDOM('<!doctype html><div id="root"></div>', { url: "http://localhost/" });
globalThis.window = dom.window;
globalThis.document = dom.window.document;
if (!("navigator" in globalThis)) globalThis.navigator = dom.window.navigator; // Node 20 has none
globalThis.IS_REACT_ACT_ENVIRONMENT = false; // real timers and real HTTP: no act()

const React = await import("react");
const { createRoot } = await import("react-dom/client");
const { useStream } = await import("@langchain/langgraph-sdk/react");
const { Client } = await import("@langchain/langgraph-sdk");

// Paths in the trace are relative to the API URL (which may have a path: ours is /langgraph).
const basePath = new URL(apiUrl).pathname.replace(/\/$/, "");
const trace = [];
async function tracingFetch(input, init = {}) {
  const url = new URL(typeof input === "string" ? input : input.url);
  const entry = {
    method: init.method ?? "GET",
    path: url.pathname.slice(url.pathname.startsWith(basePath) ? basePath.length : 0) + url.search,
    body: typeof init.body === "string" ? JSON.parse(init.body) : null,
    last_event_id: new Headers(init.headers).get("last-event-id"),
  };
  trace.push(entry);
  const response = await fetch(input, init);
  entry.status = response.status;
  return response;
}
const callerOptions = { fetch: tracingFetch, maxRetries: 0 };

const renders = [];
let handle = null;
const created = [];
const errors = [];

function Chat() {
  const thread = useStream({
    apiUrl,
    apiKey: apiKey || null,
    assistantId: "chat",
    callerOptions,
    onCreated: (meta) => created.push(meta),
    onError: (error) => errors.push(String(error?.message ?? error)),
  });
  handle = thread;
  renders.push({
    isLoading: thread.isLoading,
    messages: thread.messages.map((m) => ({ id: m.id, type: m.type, content: m.content })),
    values: thread.values,
    error: thread.error == null ? null : String(thread.error?.message ?? thread.error),
  });
  return React.createElement("pre", null, thread.messages.map((m) => m.content).join("\n"));
}

async function until(what, predicate, seconds = 30) {
  const deadline = Date.now() + seconds * 1000;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`usestream: ${what} not seen in ${seconds} s`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function summary(from) {
  const seen = renders.slice(from);
  const texts = seen.flatMap((r) => r.messages.filter((m) => m.type === "ai").map((m) => m.content));
  return {
    renders: seen.length,
    loading_renders: seen.filter((r) => r.isLoading).length,
    // The streamed text grows render by render, in the message the hook assembles.
    distinct_texts: new Set(texts).size,
    longest_text: texts.reduce((a, b) => (b.length > a.length ? b : a), ""),
    last: seen.at(-1),
  };
}

try {
  const root = createRoot(document.getElementById("root"));
  root.render(React.createElement(Chat));
  await until("first render", () => handle != null);

  // A short run: submit, stream, done.
  let from = renders.length;
  const submitted = handle.submit({ query: "[[tokens=20]] [[delay=0.01]] hi" });
  await until("the short run's end", () => renders.length > from && renders.at(-1).isLoading === false && renders.at(-1).values?.answer != null);
  await submitted;
  const short = summary(from);

  // A long run on a new thread, stopped by the hook after a few tokens.
  handle.switchThread(null);
  await until("the thread switched", () => renders.at(-1).values?.answer == null);
  from = renders.length;
  const long = handle.submit({ query: "[[tokens=400]] [[delay=0.02]] long" });
  await until("five tokens of the long run", () =>
    renders.slice(from).some((r) => r.messages.some((m) => m.type === "ai" && m.content.split(" ").length > 5)),
  );
  await handle.stop();
  await long;
  await until("the hook idle after stop", () => renders.at(-1).isLoading === false, 10);
  const stopped = summary(from);
  const runId = created.at(-1)?.run_id;
  const threadId = created.at(-1)?.thread_id;
  // on_disconnect "cancel": the server cancels the run once the hook's connection closes.
  const client = new Client({ apiUrl, apiKey: apiKey || null, callerOptions: { maxRetries: 0 } });
  let run = await client.runs.get(threadId, runId);
  const deadline = Date.now() + 10_000;
  while ((run.status === "running" || run.status === "pending") && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    run = await client.runs.get(threadId, runId);
  }
  stopped.run_status = run.status;
  stopped.state_values = (await client.threads.getState(threadId)).values;
  root.unmount();
  process.stdout.write(`${JSON.stringify({ created, errors, short, stopped, trace })}\n`);
  process.exit(0);
} catch (error) {
  console.error(JSON.stringify({ created, errors, renders: renders.slice(-3), trace }, null, 1));
  console.error(error?.stack ?? String(error));
  process.exit(1);
}
