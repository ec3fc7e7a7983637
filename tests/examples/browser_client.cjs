// Runs examples/browser/heartbeat.js (the page's own code) under Node with the official
// socket.io-client: one socket beats, one stays silent. Prints one JSON line per event.
//   node browser_client.cjs URL INTERVAL_SECONDS
const path = require("path");
const { io } = require(path.join(__dirname, "..", "js", "node_modules", "socket.io-client"));
const { startHeartbeat } = require(path.join(__dirname, "..", "..", "examples", "browser", "heartbeat.js"));

const [url, interval] = process.argv.slice(2);
const say = (event) => console.log(JSON.stringify(event));
const beating = io(url, { transports: ["websocket"], reconnection: false });
const silent = io(url, { transports: ["websocket"], reconnection: false });
startHeartbeat(beating, Number(interval) * 1000, {
  onGone: (gone) => say({ client: "beating", event: "peer_gone", ...gone }),
});
silent.on("connect", () => say({ client: "silent", event: "connect", id: silent.id }));
beating.on("connect", () => say({ client: "beating", event: "connect", id: beating.id }));
silent.on("disconnect", (reason) => say({ client: "silent", event: "disconnect", reason }));
setTimeout(() => process.exit(3), 20000); // a bound, never reached when things work
