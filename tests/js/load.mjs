// Many clients in one Node process: the overload tests' load. By default official
// socket.io-client connections; --protocol=websocket or --protocol=tcp speaks the stream
// transports' JSON wire instead (hello, then {"type": "beat"}; a websocket through `ws`, the
// WebSocket library socket.io-client itself uses, or a TCP socket, one JSON object a line).
// usage: node load.mjs --url=http://127.0.0.1:8000 --clients=3000 --interval=1 --rate=300
//          [--protocol=socketio|websocket|tcp] [--transport=websocket] [--duration=30]
//          [--silent=1] [--silent-at=15] [--silent-every=1]
// Clients open at --rate per second, each beating every --interval seconds from a random
// phase. From --silent-at seconds on, one client every --silent-every seconds (--silent in
// all, the earliest accepted first) stops beating and stays connected: the server must expire
// it. After --duration seconds (from the start) a summary line is printed (its ended_at is
// when the run ended), then every client still connected leaves.
// Prints JSON lines (times are Date.now() milliseconds, for correlating with server logs):
//   {"type": "connected", "i", "id", "t"}          connected (id: the sid, or the peer id sent)
//   {"type": "refused", "i", "message"}            connect_error, or closed before the welcome
//                                                  (the server's reason, its variable tail cut)
//   {"type": "silent", "i", "id", "last_beat"}     a client stopped beating
//   {"type": "disconnect", "i", "id", "reason", "t", "silent", "last_beat", "max_gap"}
//   {"type": "summary", ...}                       counts, and this process's own lag
import net from "node:net";
import { io } from "socket.io-client";
import WebSocket from "ws";

const options = Object.fromEntries(
  process.argv.slice(2).map((arg) => {
    const [key, value = "true"] = arg.replace(/^--/, "").split("=");
    return [key, value];
  }),
);
const url = options.url;
const protocol = options.protocol ?? "socketio";
const transport = options.transport ?? "websocket";
const clients = Number(options.clients ?? 100);
const interval = Number(options.interval ?? 1) * 1000;
const rate = Number(options.rate ?? 200);
const duration = Number(options.duration ?? 30) * 1000;
const silentCount = Number(options.silent ?? 0);
const silentAt = Number(options["silent-at"] ?? duration / 2000) * 1000;
const silentEvery = Number(options["silent-every"] ?? 1) * 1000;

const print = (object) => process.stdout.write(JSON.stringify(object) + "\n");
const started = Date.now();
const sockets = [];
const counts = { offered: 0, connected: 0, refused: 0, errors: 0, disconnected: 0 };
const refusals = {};
const reasons = {};
let silencedSoFar = 0;
let maxGap = 0; // the longest this process took between two beats of one client (ms)
let maxLoopLag = 0; // how late this process's own timers ran (ms)

// This process's own event-loop lag: if the load generator starves, its beats are late
// because of it, not because of the server. The summary says how late it ever was.
let tick = performance.now();
setInterval(() => {
  const now = performance.now();
  maxLoopLag = Math.max(maxLoopLag, now - tick - 100);
  tick = now;
}, 100);

// What every protocol's client reports: connected, refused (before it was), disconnected.
function connected(state, beat) {
  counts.connected += 1;
  print({ type: "connected", i: state.i, id: state.id, t: Date.now() });
  state.beating = true;
  beat(); // the connect counts as a beat on the server: start the rhythm now
  state.timer = setTimeout(() => {
    beat();
    state.timer = setInterval(beat, interval);
  }, Math.random() * interval);
}

function refused(state, message) {
  if (message.includes("server overloaded") || message.includes("503")) counts.refused += 1;
  else counts.errors += 1;
  refusals[message] = (refusals[message] ?? 0) + 1;
  print({ type: "refused", i: state.i, message });
}

function disconnected(state, reason) {
  clearTimeout(state.timer);
  clearInterval(state.timer);
  if (!state.beating) return;
  state.beating = false;
  counts.disconnected += 1;
  reasons[reason] = (reasons[reason] ?? 0) + 1;
  print({
    type: "disconnect", i: state.i, id: state.id, reason, t: Date.now(),
    silent: state.silent, last_beat: state.lastBeat, max_gap: state.maxGap,
  });
}

function beater(state, send) {
  return () => {
    const now = Date.now();
    if (state.lastBeat) state.maxGap = Math.max(state.maxGap, now - state.lastBeat);
    maxGap = Math.max(maxGap, state.maxGap);
    state.lastBeat = now;
    send();
  };
}

// A refusal's reason without its variable tail ("refused: overloaded: server overloaded, lag ..").
const kind = (reason) => String(reason).split(",")[0];

function openSocketIO(state) {
  const socket = io(url, { transports: [transport], reconnection: false, forceNew: true, timeout: 60000 });
  state.close = () => socket.close();
  const beat = beater(state, () => socket.emit("heartbeat"));
  socket.on("connect", () => {
    state.id = socket.id;
    connected(state, beat);
  });
  socket.on("connect_error", (error) => {
    // The adapter's refusal is the message; an HTTP 503 (a server far behind) is in the
    // description of engine.io's transport error ("Unexpected server response: 503").
    const detail = error.description?.message ?? error.description?.error?.message;
    refused(state, String(error.message ?? error) + (detail ? ` (${detail})` : ""));
    socket.close();
  });
  socket.on("disconnect", (reason) => disconnected(state, reason));
}

// The stream transports: the peer id is fixed-width, so that no id contains another.
const peerId = (i) => `load-${String(i).padStart(7, "0")}`;

function openWebSocket(state) {
  const socket = new WebSocket(url.replace(/^http/, "ws"), { perMessageDeflate: false, handshakeTimeout: 60000 });
  state.close = () => socket.close(1000, "leaving");
  const beat = beater(state, () => socket.send('{"type":"beat"}'));
  let welcomed = false;
  socket.on("open", () => socket.send(JSON.stringify({ type: "hello", peer: peerId(state.i) })));
  socket.on("message", (data) => {
    if (welcomed || JSON.parse(String(data)).type !== "welcome") return;
    welcomed = true;
    state.id = peerId(state.i);
    connected(state, beat);
  });
  socket.on("error", () => {}); // followed by close
  socket.on("close", (code, reason) => {
    const why = `${code} ${reason}`.trim();
    if (welcomed) disconnected(state, why);
    else refused(state, kind(why));
  });
}

function openTcp(state) {
  const { hostname, port } = new URL(url);
  const socket = net.connect({ host: hostname, port: Number(port) });
  state.close = () => socket.end();
  const beat = beater(state, () => socket.write('{"type":"beat"}\n'));
  let welcomed = false;
  let closedWith = null; // the server's {"type": "closed", "reason"}
  let buffer = "";
  socket.setEncoding("utf8");
  socket.on("connect", () => socket.write(JSON.stringify({ type: "hello", peer: peerId(state.i) }) + "\n"));
  socket.on("data", (chunk) => {
    buffer += chunk;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const message = JSON.parse(buffer.slice(0, end));
      buffer = buffer.slice(end + 1);
      if (message.type === "closed") closedWith = message.reason;
      else if (message.type === "welcome" && !welcomed) {
        welcomed = true;
        state.id = peerId(state.i);
        connected(state, beat);
      }
    }
  });
  socket.on("error", (error) => {
    closedWith = closedWith ?? `error: ${error.code ?? error.message}`;
  });
  socket.on("close", () => {
    const why = closedWith ?? "connection closed";
    if (welcomed) disconnected(state, why);
    else refused(state, kind(why));
  });
}

const openers = { socketio: openSocketIO, websocket: openWebSocket, tcp: openTcp };
const openOne = openers[protocol];
if (!openOne) throw new Error(`unknown --protocol=${protocol}`);

function open(i) {
  counts.offered += 1;
  const state = { i, id: null, beating: false, silent: false, lastBeat: 0, maxGap: 0, timer: null, close: null };
  sockets.push(state);
  openOne(state);
}

function silence(state) {
  silencedSoFar += 1;
  state.silent = true;
  clearTimeout(state.timer);
  clearInterval(state.timer);
  print({ type: "silent", i: state.i, id: state.id, last_beat: state.lastBeat });
}

// Open the clients at `rate` per second, in small batches every 10 ms.
let next = 0;
const opener = setInterval(() => {
  const due = Math.min(clients, Math.floor(((Date.now() - started) / 1000) * rate) + 1);
  while (next < due) open(next++);
  if (next >= clients) clearInterval(opener);
}, 10);

// From silentAt, silence one beating client every silentEvery ms, the earliest accepted first.
setTimeout(() => {
  const next = () => {
    const state = sockets.find((candidate) => candidate.beating && !candidate.silent);
    if (state) silence(state);
    if (silencedSoFar < silentCount) setTimeout(next, silentEvery);
  };
  if (silentCount > 0) next();
}, silentAt);

setTimeout(() => {
  clearInterval(opener);
  const summary = {
    type: "summary", ...counts, still_connected: 0, refusals, reasons,
    max_gap: maxGap, max_loop_lag: Math.round(maxLoopLag), elapsed: Date.now() - started,
    ended_at: Date.now(),
  };
  for (const state of sockets) {
    if (state.beating) {
      summary.still_connected += 1;
      state.beating = false; // our own leaving is not a departure the server caused
    }
  }
  print(summary);
  for (const state of sockets) {
    clearTimeout(state.timer);
    clearInterval(state.timer);
    state.close?.();
  }
  setTimeout(() => process.exit(0), 500);
}, duration);
