// A Socket.IO client for the end-to-end tests, built on the README's snippet.
// usage: node client.mjs <url> <websocket|polling> <beat|silent> <interval seconds> [namespace]
// Prints one JSON object per line: {"type": "connected", "id": ...},
// {"type": "peer_gone", "peer": ..., "reason": ...}, {"type": "disconnect", "reason": ...}.
import { io } from "socket.io-client";

const [url, transport, mode, interval, namespace = "/"] = process.argv.slice(2);
const print = (object) => process.stdout.write(JSON.stringify(object) + "\n");

// --- the README snippet (the interval in ms, as the server's --interval) ---
const socket = io(url + (namespace === "/" ? "" : namespace), { transports: [transport], reconnection: false });
const INTERVAL = Number(interval) * 1000;
let timer;
socket.on("connect", () => {
  clearInterval(timer);
  if (mode === "beat") timer = setInterval(() => socket.emit("heartbeat"), INTERVAL * (0.9 + 0.1 * Math.random()));
  print({ type: "connected", id: socket.id, transport: socket.io.engine.transport.name });
});
socket.on("disconnect", (reason) => { clearInterval(timer); print({ type: "disconnect", reason }); setTimeout(() => process.exit(0), 500); });
socket.on("peer_gone", ({ peer, reason }) => print({ type: "peer_gone", peer, reason }));
// --- end of the snippet ---
socket.on("connect_error", (error) => { print({ type: "connect_error", message: String(error) }); process.exit(1); });
process.stdin.on("data", (data) => { if (String(data).includes("leave")) socket.disconnect(); });
