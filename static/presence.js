// presence.js: who is in a room, kept in a browser from the server's presence_state + presence_diff.
//
// A dependency-free ES module. `heartbeat-monitor serve` serves it at /static/presence.js;
// a bundler takes it from this file (it reads no globals).
//
//   import { io } from "socket.io-client";
//   import { trackPresence } from "/static/presence.js";
//   const socket = io("http://127.0.0.1:8000");
//   const presence = trackPresence(socket, { room: "peers" });
//   presence.onChange((list) => render(list.list()));   // [{peer, metas: [{conn, ...}]}]
//
// The server (heartbeat_monitor's Roster) sends, per room:
//   - presence_state {room, seq, peers: {peer: {metas}}, count: {peers, connections}[, partial]}
//     when this connection enters the room, and when it asks "presence_sync";
//   - presence_diff {room, seq, joins, leaves, updates, count}: at most one per room per window,
//     numbered seq + 1, seq + 2, ... A leave carries its "reason" ("heartbeat timeout", ...).
// The rules kept here: diffs that come before the first state wait for it; a diff numbered at
// most the state's seq is already in it; the next number is applied; a gap (or a diff that
// contradicts the list) means something was missed: the list asks "presence_sync" {room} once
// and waits for the fresh state, keeping later diffs for it.

/** One room's presence list, fed by `handle(event, message)`. `sync(room)` asks for a state. */
export class PresenceList {
  constructor({ room = "peers", sync = null } = {}) {
    this.room = room;
    this._sync = sync;
    this._peers = new Map(); // peer -> metas
    this._waiting = []; // diffs kept until a state comes
    this._ready = false;
    this._syncing = false;
    this.seq = 0;
    this.count = { peers: 0, connections: 0 };
    this.partial = false;
    this.gaps = 0; // times something was missed (and a state asked for)
    this._listeners = { join: [], leave: [], update: [], change: [] };
  }

  /** Whether the list holds a state (it may still be waiting for a fresh one after a gap). */
  get ready() {
    return this._ready && !this._syncing;
  }

  /** [{peer, metas}] in the order they came. */
  list() {
    return [...this._peers].map(([peer, metas]) => ({ peer, metas }));
  }

  /** The metas of `peer` (one per connection), or undefined. */
  get(peer) {
    return this._peers.get(peer);
  }

  has(peer) {
    return this._peers.has(peer);
  }

  get size() {
    return this._peers.size;
  }

  /** fn(peer, metas) for each join; fn(peer, metas, reason) for each leave; ... */
  onJoin(fn) {
    return this._on("join", fn);
  }
  onLeave(fn) {
    return this._on("leave", fn);
  }
  onUpdate(fn) {
    return this._on("update", fn);
  }
  /** fn(list) after each state or diff applied. */
  onChange(fn) {
    return this._on("change", fn);
  }

  /** Feed one message: `event` is "presence_state" or "presence_diff" (others are ignored). */
  handle(event, message) {
    if (!message || message.room !== this.room) return false;
    if (event === "presence_state") this._state(message);
    else if (event === "presence_diff") this._diff(message);
    else return false;
    return true;
  }

  /** The connection dropped: until its next state, the list is not current. */
  reset() {
    this._ready = false;
    this._syncing = false;
    this._waiting = [];
  }

  _on(type, fn) {
    this._listeners[type].push(fn);
    return () => {
      const list = this._listeners[type];
      const at = list.indexOf(fn);
      if (at >= 0) list.splice(at, 1);
    };
  }

  _emit(type, ...args) {
    for (const fn of [...this._listeners[type]]) fn(...args);
  }

  _state(message) {
    this._peers = new Map(Object.entries(message.peers).map(([peer, entry]) => [peer, entry.metas]));
    this.seq = message.seq;
    this.count = { ...message.count };
    this.partial = Boolean(message.partial);
    this._ready = true;
    this._syncing = false;
    const waiting = this._waiting.sort((a, b) => a.seq - b.seq);
    this._waiting = [];
    this._emit("change", this);
    for (const diff of waiting) this._diff(diff);
  }

  _diff(message) {
    if (!this._ready || this._syncing) {
      this._waiting.push(message);
      return;
    }
    if (message.seq <= this.seq) return; // already in the state
    if (message.seq !== this.seq + 1 || !this._fits(message)) {
      this._missed(message);
      return;
    }
    this.seq = message.seq;
    this.count = { ...message.count };
    for (const [peer, entry] of Object.entries(message.leaves)) {
      this._peers.delete(peer);
      this._emit("leave", peer, entry.metas, entry.reason);
    }
    for (const [peer, entry] of Object.entries(message.updates)) {
      this._peers.set(peer, entry.metas);
      this._emit("update", peer, entry.metas);
    }
    for (const [peer, entry] of Object.entries(message.joins)) {
      this._peers.set(peer, entry.metas);
      this._emit("join", peer, entry.metas);
    }
    this._emit("change", this);
  }

  /** Whether a diff agrees with the list: leaves and updates of present peers, joins of absent. */
  _fits(message) {
    const present = (peer) => this._peers.has(peer);
    return (
      Object.keys(message.leaves).every(present) &&
      Object.keys(message.updates).every(present) &&
      !Object.keys(message.joins).some(present)
    );
  }

  _missed(message) {
    this.gaps += 1;
    this._syncing = true;
    this._waiting = [message];
    if (this._sync) this._sync(this.room);
  }
}

/**
 * Keep `room`'s presence list from a socket.io-client `socket`: returns the PresenceList, with
 * `stop()` to remove its listeners. On a gap it emits "presence_sync" {room} (the event name is
 * `syncEvent`); after a reconnection the server sends a fresh state by itself.
 */
export function trackPresence(socket, { room = "peers", syncEvent = "presence_sync" } = {}) {
  if (!socket || typeof socket.emit !== "function" || typeof socket.on !== "function") {
    throw new TypeError("trackPresence needs a socket.io-client socket");
  }
  const list = new PresenceList({ room, sync: (name) => socket.emit(syncEvent, { room: name }) });
  const onState = (message) => list.handle("presence_state", message);
  const onDiff = (message) => list.handle("presence_diff", message);
  const onDisconnect = () => list.reset();
  socket.on("presence_state", onState);
  socket.on("presence_diff", onDiff);
  socket.on("disconnect", onDisconnect);
  list.stop = () => {
    socket.off("presence_state", onState);
    socket.off("presence_diff", onDiff);
    socket.off("disconnect", onDisconnect);
  };
  return list;
}
