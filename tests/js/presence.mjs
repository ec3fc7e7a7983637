// Official Socket.IO JavaScript clients keeping presence lists with static/presence.js.
// usage: node presence.mjs <url> <interval seconds> [room]
// Commands on stdin, one JSON object per line; answers on stdout, one JSON object per line:
//   {"cmd": "open", "n": 20, "auth": {...}}   -> {"type": "opened", "ids": [sid, ...]}
//   {"cmd": "close", "ids": [...]}            -> {"type": "closed", "ids": [...]}  (disconnect())
//   {"cmd": "drop", "ids": [...]}             -> {"type": "dropped", "ids": [...]} (transport cut)
//   {"cmd": "report"}                         -> {"type": "report", "clients": {sid: {...}}}
// Each open socket beats with static/heartbeat.js and keeps its list with trackPresence.
import readline from "node:readline";
import { io } from "socket.io-client";

import { startHeartbeat } from "../../static/heartbeat.js";
import { trackPresence } from "../../static/presence.js";

const [url, interval, room = "peers"] = process.argv.slice(2);
const print = (object) => process.stdout.write(JSON.stringify(object) + "\n");
const clients = new Map(); // sid -> {socket, presence, diffs, states}

function open(auth) {
  return new Promise((resolve, reject) => {
    const socket = io(url, { transports: ["websocket"], reconnection: false, auth, forceNew: true });
    const presence = trackPresence(socket, { room });
    const entry = { socket, presence, diffs: [], states: 0 };
    socket.on("presence_diff", (message) => {
      if (message.room === room) entry.diffs.push(message.seq);
    });
    socket.on("presence_state", (message) => {
      if (message.room === room) entry.states += 1;
    });
    socket.on("connect", () => {
      startHeartbeat(socket, { interval: Number(interval), document: null, window: null });
      clients.set(socket.id, entry);
      resolve(socket.id);
    });
    socket.on("connect_error", (error) => reject(error));
  });
}

function report() {
  const out = {};
  for (const [sid, { socket, presence, diffs, states }] of clients) {
    out[sid] = {
      connected: socket.connected,
      ready: presence.ready,
      peers: Object.fromEntries(presence.list().map(({ peer, metas }) => [peer, metas])),
      seq: presence.seq,
      count: presence.count,
      gaps: presence.gaps,
      diffs,
      states,
    };
  }
  return out;
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", async (line) => {
  const command = JSON.parse(line);
  try {
    if (command.cmd === "open") {
      const ids = await Promise.all(Array.from({ length: command.n ?? 1 }, () => open(command.auth)));
      print({ type: "opened", ids });
    } else if (command.cmd === "close") {
      for (const sid of command.ids) clients.get(sid).socket.disconnect();
      print({ type: "closed", ids: command.ids });
    } else if (command.cmd === "drop") {
      for (const sid of command.ids) clients.get(sid).socket.io.engine.close();
      print({ type: "dropped", ids: command.ids });
    } else if (command.cmd === "report") {
      print({ type: "report", clients: report() });
    }
  } catch (error) {
    print({ type: "error", message: String(error) });
  }
});
lines.on("close", () => {
  for (const { socket } of clients.values()) socket.disconnect();
  setTimeout(() => process.exit(0), 200);
});
