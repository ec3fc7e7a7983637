// static/presence.js under Node's test runner: `node --test tests/presence/presence.test.mjs`.
import assert from "node:assert/strict";
import { test } from "node:test";

import { PresenceList, trackPresence } from "../../static/presence.js";

const meta = (conn, fields = {}) => ({ conn, ...fields });
const state = (seq, peers, room = "peers") => ({
  room,
  seq,
  peers: Object.fromEntries(Object.entries(peers).map(([p, metas]) => [p, { metas }])),
  count: {
    peers: Object.keys(peers).length,
    connections: Object.values(peers).reduce((n, m) => n + m.length, 0),
  },
});
const diff = (seq, { joins = {}, leaves = {}, updates = {} } = {}, room = "peers") => ({
  room,
  seq,
  joins: Object.fromEntries(Object.entries(joins).map(([p, metas]) => [p, { metas }])),
  leaves: Object.fromEntries(
    Object.entries(leaves).map(([p, [metas, reason]]) => [p, { metas, reason }]),
  ),
  updates: Object.fromEntries(Object.entries(updates).map(([p, metas]) => [p, { metas }])),
  count: { peers: 0, connections: 0 },
});

test("a state, then diffs in order", () => {
  const list = new PresenceList();
  const seen = [];
  list.onJoin((peer) => seen.push(["join", peer]));
  list.onLeave((peer, metas, reason) => seen.push(["leave", peer, reason]));
  list.onUpdate((peer, metas) => seen.push(["update", peer, metas.length]));
  list.handle("presence_state", state(3, { a: [meta("1")], b: [meta("2")] }));
  assert.equal(list.ready, true);
  assert.deepEqual(
    list.list().map((e) => e.peer),
    ["a", "b"],
  );
  list.handle("presence_diff", diff(4, { joins: { c: [meta("3")] }, leaves: { a: [[meta("1")], "heartbeat timeout"] } }));
  list.handle("presence_diff", diff(5, { updates: { b: [meta("2"), meta("4")] } }));
  assert.deepEqual(
    list.list().map((e) => e.peer),
    ["b", "c"],
  );
  assert.equal(list.get("b").length, 2);
  assert.equal(list.seq, 5);
  assert.deepEqual(seen, [
    ["leave", "a", "heartbeat timeout"],
    ["join", "c"],
    ["update", "b", 2],
  ]);
  assert.equal(list.gaps, 0);
});

test("diffs before the first state wait for it; old ones are already in it", () => {
  const list = new PresenceList();
  list.handle("presence_diff", diff(1, { joins: { a: [meta("1")] } }));
  list.handle("presence_diff", diff(2, { joins: { b: [meta("2")] } }));
  assert.equal(list.ready, false);
  list.handle("presence_state", state(1, { a: [meta("1")] }));
  assert.deepEqual(
    list.list().map((e) => e.peer),
    ["a", "b"],
  );
  assert.equal(list.seq, 2);
});

test("a gap asks for a state once, keeps later diffs, and heals", () => {
  const asked = [];
  const list = new PresenceList({ room: "r", sync: (room) => asked.push(room) });
  list.handle("presence_state", state(1, { a: [meta("1")] }, "r"));
  list.handle("presence_diff", diff(3, { joins: { c: [meta("3")] } }, "r"));
  list.handle("presence_diff", diff(4, { joins: { d: [meta("4")] } }, "r"));
  assert.deepEqual(asked, ["r"]);
  assert.equal(list.ready, false);
  list.handle("presence_state", state(3, { a: [meta("1")], b: [meta("2")], c: [meta("3")] }, "r"));
  assert.equal(list.ready, true);
  assert.deepEqual(
    list.list().map((e) => e.peer),
    ["a", "b", "c", "d"],
  );
  assert.equal(list.gaps, 1);
});

test("a diff that contradicts the list (a join of a present peer) is a gap too", () => {
  const asked = [];
  const list = new PresenceList({ sync: (room) => asked.push(room) });
  list.handle("presence_state", state(1, { a: [meta("1")] }));
  list.handle("presence_diff", diff(2, { joins: { a: [meta("1")] } }));
  assert.deepEqual(asked, ["peers"]);
  assert.equal(list.gaps, 1);
});

test("other rooms and other events are ignored", () => {
  const list = new PresenceList({ room: "mine" });
  assert.equal(list.handle("presence_state", state(1, { a: [meta("1")] }, "other")), false);
  assert.equal(list.handle("peer_gone", { room: "mine" }), false);
  assert.equal(list.ready, false);
});

test("trackPresence wires a socket and asks presence_sync on a gap", () => {
  const handlers = new Map();
  const sent = [];
  const socket = {
    emit: (...args) => sent.push(args),
    on: (type, fn) => handlers.set(type, fn),
    off: (type) => handlers.delete(type),
  };
  const list = trackPresence(socket, { room: "peers" });
  handlers.get("presence_state")(state(1, {}));
  handlers.get("presence_diff")(diff(5, { joins: { x: [meta("9")] } }));
  assert.deepEqual(sent, [["presence_sync", { room: "peers" }]]);
  handlers.get("disconnect")("transport close");
  assert.equal(list.ready, false);
  list.stop();
  assert.equal(handlers.size, 0);
  assert.throws(() => trackPresence({}), TypeError);
});
