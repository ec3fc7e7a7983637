// heartbeat.js: an app-level heartbeat for a socket.io-client socket that knows page visibility.
//
// A dependency-free ES module. `heartbeat-monitor serve` serves it at /static/heartbeat.js;
// a bundler takes it from this file (it reads no globals at import time).
//
//   import { io } from "socket.io-client";
//   import { startHeartbeat } from "/static/heartbeat.js";
//   const socket = io("http://127.0.0.1:8000");
//   const heartbeat = startHeartbeat(socket, { interval: 5 }); // seconds, as serve --interval
//
// What it sends (to the server's SocketIOAdapter, which holds a hidden page to --hidden-timeout):
//   - while the page is visible: "heartbeat" every `interval` seconds;
//   - when the page is hidden (visibilitychange, pagehide, freeze): "visibility" {"state": "hidden"}
//     at once, then again on every tick of its timer instead of "heartbeat" (the browser throttles
//     that timer in a hidden page, and stops it in a frozen one: the server allows for it);
//   - when the page shows again (visibilitychange, pageshow, resume): "visibility"
//     {"state": "visible"} and a "heartbeat" at once; the timer starts over;
//   - on (re)connect: "visibility" with the page's state, and a "heartbeat" if visible.
// Nothing is sent while the socket is not connected (no stale beats buffered for later).
// It stops for good on socket.disconnect() or heartbeat.stop(): timer and listeners are removed.

/** The visibility of the page as this module reports it: "hidden" or "visible". */
function visibilityOf(doc) {
  return doc && doc.visibilityState === "hidden" ? "hidden" : "visible";
}

/**
 * Start beating on `socket` (a socket.io-client Socket, connected or not yet).
 *
 * Options: `interval` (seconds between beats, default 5), `event` (the heartbeat event,
 * default "heartbeat"), `visibilityEvent` (default "visibility"), and `document` / `window`
 * (default: the page's own; pass others to test, or null to ignore visibility).
 *
 * Returns { stop(), state, stopped }: `state` is "hidden" or "visible".
 */
export function startHeartbeat(socket, options = {}) {
  const {
    interval = 5,
    event = "heartbeat",
    visibilityEvent = "visibility",
    document: doc = globalThis.document,
    window: win = globalThis.window,
  } = options;
  if (!socket || typeof socket.emit !== "function" || typeof socket.on !== "function") {
    throw new TypeError("startHeartbeat needs a socket.io-client socket");
  }
  if (typeof interval !== "number" || !Number.isFinite(interval) || interval <= 0) {
    throw new RangeError(`interval must be a number of seconds > 0, not ${String(interval)}`);
  }

  let state = visibilityOf(doc);
  let timer = null;
  let stopped = false;

  const send = (...args) => {
    if (socket.connected) socket.emit(...args);
  };
  const beat = () => {
    if (state === "hidden") send(visibilityEvent, { state: "hidden" });
    else send(event);
  };
  const restart = () => {
    clearInterval(timer);
    timer = setInterval(beat, interval * 1000);
  };
  const change = (next) => {
    if (stopped || next === state) return;
    state = next;
    if (next === "hidden") {
      send(visibilityEvent, { state: "hidden" });
      return; // the timer goes on (as fast as the browser lets it): each tick says hidden
    }
    send(visibilityEvent, { state: "visible" });
    send(event);
    if (timer !== null) restart();
  };

  const onConnect = () => {
    // The server learns this page's visibility at once (its presence meta carries it).
    send(visibilityEvent, { state });
    if (state === "visible") send(event);
    restart();
  };
  const onDisconnect = (reason) => {
    clearInterval(timer);
    timer = null;
    if (reason === "io client disconnect") stop(); // socket.disconnect(): for good
  };
  const onVisibilityChange = () => change(visibilityOf(doc));
  const onPageHide = () => change("hidden");
  const onPageShow = () => change(visibilityOf(doc));
  const onFreeze = () => change("hidden");
  const onResume = () => {
    // Back from a freeze: prove life at once (the timer may be a long way from its next tick).
    const next = visibilityOf(doc);
    if (next !== state) change(next);
    else if (!stopped && timer !== null) beat();
  };

  const listeners = [
    [doc, "visibilitychange", onVisibilityChange],
    [doc, "freeze", onFreeze],
    [doc, "resume", onResume],
    [win, "pagehide", onPageHide],
    [win, "pageshow", onPageShow],
  ].filter(([target]) => target && typeof target.addEventListener === "function");

  function stop() {
    if (stopped) return;
    stopped = true;
    clearInterval(timer);
    timer = null;
    socket.off("connect", onConnect);
    socket.off("disconnect", onDisconnect);
    for (const [target, type, listener] of listeners) target.removeEventListener(type, listener);
  }

  socket.on("connect", onConnect);
  socket.on("disconnect", onDisconnect);
  for (const [target, type, listener] of listeners) target.addEventListener(type, listener);
  if (socket.connected) onConnect();

  return {
    stop,
    get state() {
      return state;
    },
    get stopped() {
      return stopped;
    },
  };
}
