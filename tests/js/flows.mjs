// The official JS SDK (@langchain/langgraph-sdk Client) against a LangGraph Agent Server API:
// the requests `useStream` makes (README.md), done with the Client directly.
//
//   node flows.mjs URL [API_KEY]
//
// Prints one JSON object to stdout: what each flow saw, plus `trace`, every HTTP request the SDK
// made (method, path, body, Last-Event-ID) with the answer's status and Location headers.
// Checks are left to the caller (tests/api/test_langgraph_js.py), except that a flow that throws
// or hangs past its deadline makes the script exit non-zero with the error on stderr.
import { Client } from "@langchain/langgraph-sdk";

const [apiUrl, apiKey] = process.argv.slice(2);
if (!apiUrl) {
  console.error("usage: node flows.mjs URL [API_KEY]");
  process.exit(2);
}

// What `useStream` sends for a component that reads `thread.messages` (which tracks
// "messages-tuple" then "values"), submitted with streamResumable and onDisconnect set.
const USE_STREAM_MODES = ["messages-tuple", "values"];

// Paths in the trace are relative to the API URL (which may have a path: ours is /langgraph).
const basePath = new URL(apiUrl).pathname.replace(/\/$/, "");
const trace = [];
async function tracingFetch(input, init = {}) {
  const url = new URL(typeof input === "string" ? input : input.url);
  const headers = new Headers(init.headers);
  const entry = {
    method: init.method ?? "GET",
    path: url.pathname.slice(url.pathname.startsWith(basePath) ? basePath.length : 0) + url.search,
    body: typeof init.body === "string" ? JSON.parse(init.body) : null,
    last_event_id: headers.get("last-event-id"),
    content_type: headers.get("content-type"),
  };
  trace.push(entry);
  let response = await fetch(input, init);
  if (dropNextStream && entry.method === "POST" && entry.path.endsWith("/runs/stream")) {
    dropNextStream = false;
    entry.dropped = true;
    response = dropAfterMessages(response, 4);
  }
  entry.status = response.status;
  entry.response_content_type = response.headers.get("content-type");
  entry.location = response.headers.get("location");
  entry.content_location = response.headers.get("content-location");
  return response;
}

// The connection of the next POST .../runs/stream is closed after 4 `messages` events, as a
// network drop would: the body then errors, and the SDK reconnects to the stream's Location.
let dropNextStream = false;
function dropAfterMessages(response, count) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let seen = 0;
  const body = new ReadableStream({
    async pull(controller) {
      const { done, value } = await reader.read();
      if (done) {
        controller.close();
        return;
      }
      controller.enqueue(value);
      seen += decoder.decode(value, { stream: true }).split("event: messages").length - 1;
      if (seen >= count) {
        await reader.cancel(); // closes the real connection
        controller.error(new TypeError("terminated"));
      }
    },
  });
  return new Response(body, { status: response.status, headers: response.headers });
}

const client = new Client({
  apiUrl,
  apiKey: apiKey || null, // null: never read LANGGRAPH_API_KEY & co from the environment
  callerOptions: { fetch: tracingFetch, maxRetries: 0 },
});

/** The text of a `messages` event's chunk ("" for the role-only and finish chunks). */
function chunkText(data) {
  const [message] = data;
  return typeof message?.content === "string" ? message.content : "";
}

function withDeadline(name, seconds, promise) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${name}: not done in ${seconds} s`)), seconds * 1000);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** assistants.search, threads.create, then runs.stream with useStream's body. */
async function streamFlow() {
  const assistants = await client.assistants.search({ limit: 100 });
  const thread = await client.threads.create();
  let created = null;
  const events = [];
  let text = "";
  let tokens = 0;
  let values = null;
  const messageIds = new Set();
  let messageShapeOk = true;
  for await (const part of client.runs.stream(thread.thread_id, "chat", {
    input: { query: "[[tokens=20]] hi" },
    streamMode: USE_STREAM_MODES,
    streamResumable: true,
    onDisconnect: "cancel",
    onRunCreated: (meta) => {
      created = meta;
    },
  })) {
    events.push(part.event);
    if (part.event === "messages") {
      const [message, metadata] = part.data;
      messageShapeOk &&=
        Array.isArray(part.data) &&
        part.data.length === 2 &&
        typeof message?.type === "string" &&
        typeof message?.id === "string" &&
        message.id !== "" &&
        typeof metadata?.langgraph_node === "string";
      const chunk = chunkText(part.data);
      if (chunk) {
        tokens += 1;
        messageIds.add(message.id);
      }
      text += chunk;
    } else if (part.event === "values") {
      values = part.data;
    } else if (part.event === "metadata") {
      events.push(`run_id=${part.data?.run_id}`);
    }
  }
  const run = created ? await client.runs.get(thread.thread_id, created.run_id) : null;
  const state = await client.threads.getState(thread.thread_id);
  return {
    assistants: assistants.map((a) => ({ assistant_id: a.assistant_id, graph_id: a.graph_id })),
    thread: { thread_id: thread.thread_id, status: thread.status },
    created,
    events,
    text,
    tokens,
    message_ids: [...messageIds],
    message_shape_ok: messageShapeOk,
    values,
    run_status: run?.status ?? null,
    state_values: state.values,
    state_next: state.next,
  };
}

/** joinStream of a resumable background run, cut after 3 tokens, then rejoined by id. */
async function joinFlow() {
  const thread = await client.threads.create();
  const run = await client.runs.create(thread.thread_id, "chat", {
    input: { query: "[[tokens=20]] [[first=0.5]] [[delay=0.05]] join" },
    // A join gets only the modes the run was created with (LGS defaults to "values" alone).
    streamMode: USE_STREAM_MODES,
    streamResumable: true,
  });
  const first = [];
  const abort = new AbortController();
  let tokens = 0;
  for await (const part of client.runs.joinStream(thread.thread_id, run.run_id, {
    signal: abort.signal,
  })) {
    first.push(part);
    if (part.event === "messages" && chunkText(part.data)) tokens += 1;
    if (tokens === 3) {
      abort.abort(); // closes the connection, as a page going away would
      break;
    }
  }
  const lastEventId = first.at(-1)?.id;
  const second = [];
  for await (const part of client.runs.joinStream(thread.thread_id, run.run_id, {
    lastEventId,
  })) {
    second.push(part);
  }
  // The second join ends with the run; runs.join (GET .../join) is not in the subset served.
  const final = (await client.threads.getState(thread.thread_id)).values;
  // useStream's joinStream (and reconnectOnMount) sends Last-Event-ID "-1" when it has no id:
  // the whole stored stream, also after the run has finished.
  const replay = [];
  for await (const part of client.runs.joinStream(thread.thread_id, run.run_id, {
    lastEventId: "-1",
  })) {
    replay.push(part);
  }
  const texts = (parts) =>
    parts
      .filter((p) => p.event === "messages")
      .map((p) => chunkText(p.data))
      .join("");
  const firstIds = new Set(first.map((p) => p.id));
  return {
    run_id: run.run_id,
    run_status_created: run.status,
    first_events: first.map((p) => [p.event, p.id ?? null]),
    second_events: second.map((p) => [p.event, p.id ?? null]),
    last_event_id: lastEventId ?? null,
    first_tokens: tokens,
    repeated_ids: second.filter((p) => p.id != null && firstIds.has(p.id)).map((p) => p.id),
    second_without_id: second.filter((p) => p.id == null).length,
    text: texts(first) + texts(second),
    replay_events: [...new Set(replay.map((p) => p.event))],
    replay_text: texts(replay),
    final,
    run_status: (await client.runs.get(thread.thread_id, run.run_id)).status,
  };
}

/** A long run streamed with useStream's body, cancelled mid-stream with runs.cancel. */
async function cancelFlow() {
  const thread = await client.threads.create();
  let created = null;
  let tokens = 0;
  let cancelledAt = null;
  let cancelResult;
  const events = [];
  for await (const part of client.runs.stream(thread.thread_id, "chat", {
    input: { query: "[[tokens=400]] [[delay=0.02]] long" },
    streamMode: USE_STREAM_MODES,
    streamResumable: true,
    onDisconnect: "cancel",
    onRunCreated: (meta) => {
      created = meta;
    },
  })) {
    events.push(part.event);
    if (part.event === "messages" && chunkText(part.data)) tokens += 1;
    if (tokens === 5 && cancelledAt === null) {
      cancelledAt = performance.now();
      cancelResult = await client.runs.cancel(thread.thread_id, created.run_id);
    }
  }
  const endedAfterCancelS = cancelledAt === null ? null : (performance.now() - cancelledAt) / 1000;
  const run = await client.runs.get(thread.thread_id, created.run_id);
  const state = await client.threads.getState(thread.thread_id);
  return {
    run_id: created?.run_id ?? null,
    tokens,
    events_tail: events.slice(-3),
    cancel_result: cancelResult ?? null,
    ended_after_cancel_s: endedAfterCancelS,
    run_status: run.status,
    state_values: state.values,
    state_next: state.next,
  };
}

/** A resumable stream (useStream's body with reconnectOnMount: on_disconnect "continue") whose
 * connection drops mid-run: the SDK reconnects to Location with Last-Event-ID by itself. */
async function reconnectFlow() {
  const thread = await client.threads.create();
  let created = null;
  const parts = [];
  dropNextStream = true;
  for await (const part of client.runs.stream(thread.thread_id, "chat", {
    input: { query: "[[tokens=20]] [[delay=0.03]] reconnect" },
    streamMode: USE_STREAM_MODES,
    streamResumable: true,
    onDisconnect: "continue",
    onRunCreated: (meta) => {
      created = meta;
    },
  })) {
    parts.push(part);
  }
  const ids = parts.map((p) => p.id).filter((id) => id != null);
  return {
    thread_id: thread.thread_id,
    run_id: created?.run_id ?? null,
    events: [...new Set(parts.map((p) => p.event))],
    metadata_events: parts.filter((p) => p.event === "metadata").length,
    repeated_ids: ids.filter((id, i) => ids.indexOf(id) !== i),
    text: parts
      .filter((p) => p.event === "messages")
      .map((p) => chunkText(p.data))
      .join(""),
    values: parts.filter((p) => p.event === "values").at(-1)?.data ?? null,
    run_status: created ? (await client.runs.get(thread.thread_id, created.run_id)).status : null,
  };
}

try {
  const result = {};
  result.stream = await withDeadline("stream", 60, streamFlow());
  result.join = await withDeadline("join", 60, joinFlow());
  result.cancel = await withDeadline("cancel", 60, cancelFlow());
  result.reconnect = await withDeadline("reconnect", 60, reconnectFlow());
  result.trace = trace;
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
} catch (error) {
  console.error(JSON.stringify({ trace }, null, 1));
  console.error(error?.stack ?? String(error));
  process.exit(1);
}
