// static/heartbeat.js under Node's test runner: `node --test tests/browser/`.
// A fake socket (what socket.io-client's Socket offers the module: connected, emit, on, off),
// EventTargets for the document and the window, and a hand-driven clock for setInterval.
import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";

import { startHeartbeat } from "../../static/heartbeat.js";

class FakeSocket {
  constructor(connected = true) {
    this.connected = connected;
    this.sent = [];
    this.handlers = new Map();
  }
  emit(...args) {
    this.sent.push(args);
  }
  on(type, handler) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(handler);
  }
  off(type, handler) {
    this.handlers.get(type)?.delete(handler);
  }
  fire(type, ...args) {
    for (const handler of [...(this.handlers.get(type) ?? [])]) handler(...args);
  }
  listeners() {
    return [...this.handlers.values()].reduce((n, set) => n + set.size, 0);
  }
  // What socket.io-client does on (re)connection and on disconnect().
  connect() {
    this.connected = true;
    this.fire("connect");
  }
  drop(reason = "transport close") {
    this.connected = false;
    this.fire("disconnect", reason);
  }
  disconnect() {
    this.drop("io client disconnect");
  }
  take() {
    const sent = this.sent;
    this.sent = [];
    return sent;
  }
}

class FakeDocument extends EventTarget {
  constructor() {
    super();
    this.visibilityState = "visible";
    this.added = 0;
  }
  addEventListener(...args) {
    this.added += 1;
    super.addEventListener(...args);
  }
  removeEventListener(...args) {
    this.added -= 1;
    super.removeEventListener(...args);
  }
  show(state, type = "visibilitychange") {
    this.visibilityState = state;
    this.dispatchEvent(new Event(type));
  }
}

// A clock for setInterval / clearInterval only: tick(ms) runs what falls due, in order.
const clock = {
  now: 0,
  timers: new Map(),
  next: 1,
  tick(ms) {
    const until = this.now + ms;
    for (;;) {
      const due = [...this.timers.entries()].sort((a, b) => a[1].at - b[1].at)[0];
      if (!due || due[1].at > until) break;
      this.now = due[1].at;
      due[1].at += due[1].every;
      due[1].fn();
    }
    this.now = until;
  },
};
const real = { setInterval: globalThis.setInterval, clearInterval: globalThis.clearInterval };
beforeEach(() => {
  clock.now = 0;
  clock.timers.clear();
  globalThis.setInterval = (fn, every) => {
    const id = clock.next++;
    clock.timers.set(id, { fn, every, at: clock.now + every });
    return id;
  };
  globalThis.clearInterval = (id) => clock.timers.delete(id);
});
afterEach(() => Object.assign(globalThis, real));

const HEARTBEAT = ["heartbeat"];
const HIDDEN = ["visibility", { state: "hidden" }];
const VISIBLE = ["visibility", { state: "visible" }];

function start(socket, doc = new FakeDocument(), win = new EventTarget()) {
  const heartbeat = startHeartbeat(socket, { interval: 2, document: doc, window: win });
  return { heartbeat, doc, win };
}

test("says it is visible and beats at once on a connected socket, then every interval", () => {
  const socket = new FakeSocket();
  start(socket);
  assert.deepEqual(socket.take(), [VISIBLE, HEARTBEAT]);
  clock.tick(1999);
  assert.deepEqual(socket.take(), []);
  clock.tick(1);
  assert.deepEqual(socket.take(), [HEARTBEAT]);
  clock.tick(6000);
  assert.deepEqual(socket.take(), [HEARTBEAT, HEARTBEAT, HEARTBEAT]);
});

test("waits for the connection and sends nothing while disconnected", () => {
  const socket = new FakeSocket(false);
  start(socket);
  clock.tick(10_000);
  assert.deepEqual(socket.take(), []);
  socket.connect();
  assert.deepEqual(socket.take(), [VISIBLE, HEARTBEAT]);
  socket.drop();
  clock.tick(10_000);
  assert.deepEqual(socket.take(), [], "no beats buffered while the transport is down");
  socket.connect();
  assert.deepEqual(socket.take(), [VISIBLE, HEARTBEAT]);
  clock.tick(2000);
  assert.deepEqual(socket.take(), [HEARTBEAT]);
});

test("a hidden page says so at once and on every tick; visible again, it beats at once", () => {
  const socket = new FakeSocket();
  const { heartbeat, doc } = start(socket);
  socket.take();
  clock.tick(500);
  doc.show("hidden");
  assert.equal(heartbeat.state, "hidden");
  assert.deepEqual(socket.take(), [HIDDEN]);
  clock.tick(4000);
  assert.deepEqual(socket.take(), [HIDDEN, HIDDEN], "the timer goes on, as hidden reports");
  doc.show("visible");
  assert.equal(heartbeat.state, "visible");
  assert.deepEqual(socket.take(), [VISIBLE, HEARTBEAT]);
  clock.tick(1999);
  assert.deepEqual(socket.take(), [], "the timer started over at the visible beat");
  clock.tick(1);
  assert.deepEqual(socket.take(), [HEARTBEAT]);
});

test("pagehide / pageshow and freeze / resume", () => {
  const socket = new FakeSocket();
  const { heartbeat, doc, win } = start(socket);
  socket.take();
  win.dispatchEvent(new Event("pagehide"));
  assert.deepEqual(socket.take(), [HIDDEN]);
  win.dispatchEvent(new Event("pageshow"));
  assert.deepEqual(socket.take(), [VISIBLE, HEARTBEAT]);

  doc.visibilityState = "hidden";
  doc.dispatchEvent(new Event("freeze"));
  assert.deepEqual(socket.take(), [HIDDEN]);
  doc.dispatchEvent(new Event("resume"));
  assert.deepEqual(socket.take(), [HIDDEN], "resumed and still hidden: a report at once");
  doc.show("visible", "resume");
  assert.deepEqual(socket.take(), [VISIBLE, HEARTBEAT]);
  assert.equal(heartbeat.state, "visible");
});

test("a reconnection while hidden reports hidden, not a heartbeat", () => {
  const socket = new FakeSocket();
  const { doc } = start(socket);
  doc.show("hidden");
  socket.drop("ping timeout");
  socket.take();
  socket.connect();
  assert.deepEqual(socket.take(), [HIDDEN]);
  doc.show("visible"); // the timer was restarted by the connect: still beating
  clock.tick(2000);
  assert.deepEqual(socket.take(), [VISIBLE, HEARTBEAT, HEARTBEAT]);
});

test("socket.disconnect() stops it for good: no timer, no listeners", () => {
  const socket = new FakeSocket();
  const { heartbeat, doc, win } = start(socket);
  const before = socket.listeners();
  assert.equal(doc.added, 3);
  socket.disconnect();
  assert.ok(heartbeat.stopped);
  assert.equal(socket.listeners(), before - 2);
  assert.equal(doc.added, 0);
  assert.equal(clock.timers.size, 0);
  socket.take();
  socket.connect(); // an app that connects the socket again starts a new heartbeat itself
  doc.show("hidden");
  win.dispatchEvent(new Event("pageshow"));
  clock.tick(10_000);
  assert.deepEqual(socket.take(), []);
});

test("stop() is idempotent; a dropped connection is not a stop", () => {
  const socket = new FakeSocket();
  const { heartbeat } = start(socket);
  socket.drop("transport close");
  assert.equal(heartbeat.stopped, false);
  heartbeat.stop();
  heartbeat.stop();
  assert.equal(socket.listeners(), 0);
  assert.equal(clock.timers.size, 0);
});

test("works without a document (a worker, a server-side test)", () => {
  const socket = new FakeSocket();
  const heartbeat = startHeartbeat(socket, { interval: 1, document: null, window: null });
  assert.equal(heartbeat.state, "visible");
  clock.tick(1000);
  assert.deepEqual(socket.take(), [VISIBLE, HEARTBEAT, HEARTBEAT]);
});

test("bad arguments are clear errors", () => {
  assert.throws(() => startHeartbeat(null), TypeError);
  assert.throws(() => startHeartbeat({}), /socket.io-client socket/);
  for (const interval of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, "5"]) {
    assert.throws(() => startHeartbeat(new FakeSocket(), { interval }), RangeError);
  }
});
