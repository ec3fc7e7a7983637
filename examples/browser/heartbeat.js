// Heartbeats from a browser page (or Node): beat on an interval, hear who is gone.
//   startHeartbeat(socket, intervalMs, { onGone, onDisconnect })
// `socket` is a socket.io-client 4.x socket; intervalMs is the server's interval.
(function (root) {
  function startHeartbeat(socket, intervalMs, handlers) {
    handlers = handlers || {};
    let timer;
    socket.on("connect", () => {
      clearInterval(timer);
      // Jitter only makes beats earlier, never late.
      timer = setInterval(() => socket.emit("heartbeat"), intervalMs * (0.9 + 0.1 * Math.random()));
    });
    socket.on("disconnect", (reason) => {
      clearInterval(timer); // "io server disconnect" when the server expired this client
      if (handlers.onDisconnect) handlers.onDisconnect(reason);
    });
    socket.on("peer_gone", (gone) => {
      if (handlers.onGone) handlers.onGone(gone); // {peer, reason}
    });
    return { stop: () => clearInterval(timer) };
  }
  if (typeof module !== "undefined" && module.exports) {
    module.exports = { startHeartbeat };
  } else {
    root.startHeartbeat = startHeartbeat;
  }
})(this);
