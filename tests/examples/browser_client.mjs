// The browser example's client code under Node: the module the example server hands out
// (/static/heartbeat.js, saved by the test beside this run) with the official socket.io-client.
// One socket beats with it; one connects and stays silent. One JSON line per event.
//   node browser_client.mjs SOCKET_IO_CLIENT_DIR MODULE_FILE URL INTERVAL_SECONDS
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const [clientDir, moduleFile, url, interval] = process.argv.slice(2);
const { io } = createRequire(import.meta.url)(clientDir); // socket.io-client from tests/js
const { startHeartbeat } = await import(pathToFileURL(moduleFile).href); // an .mjs copy

const say = (event) => console.log(JSON.stringify(event));
const beating = io(url, { transports: ["websocket"], reconnection: false });
const silent = io(url, { transports: ["websocket"], reconnection: false });
startHeartbeat(beating, { interval: Number(interval), document: null, window: null });
beating.on("peer_gone", (gone) => say({ client: "beating", event: "peer_gone", ...gone }));
beating.on("connect", () => say({ client: "beating", event: "connect", id: beating.id }));
silent.on("connect", () => say({ client: "silent", event: "connect", id: silent.id }));
silent.on("disconnect", (reason) => say({ client: "silent", event: "disconnect", reason }));
setTimeout(() => process.exit(3), 20000); // a bound, never reached when things work
