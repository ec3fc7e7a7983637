"""A client's presence list, kept as ``static/presence.js`` keeps it (the same rules, in Python).

Diffs that arrive before the first state wait for it; a diff numbered at most
the state's ``seq`` is already in the state; the next number is applied; a gap
asks for a fresh state. Applying a diff checks that nobody joins twice or
leaves without having joined: a broken rule is recorded in ``errors``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any


class View:
    def __init__(self, room: Hashable = "peers") -> None:
        self.room = room
        #: peer (wire id) -> metas; ``None`` until the first state.
        self.peers: dict[str, list[dict[str, Any]]] | None = None
        self.seq = 0
        self.count: dict[str, int] | None = None
        self.partial = False
        self.states = 0
        self.diffs = 0
        self.gaps = 0
        self.errors: list[str] = []
        self.joined: list[str] = []
        self.left: list[tuple[str, str]] = []
        self._early: list[Mapping[str, Any]] = []

    def feed(self, event: str, message: Mapping[str, Any]) -> None:
        """One message from the server (``event`` is its name or its wire ``type``)."""
        if message.get("room") != self.room:
            return
        if event == "presence_state":
            self.states += 1
            self.peers = {peer: list(entry["metas"]) for peer, entry in message["peers"].items()}
            self.seq = message["seq"]
            self.count = dict(message["count"])
            self.partial = bool(message.get("partial"))
            early, self._early = self._early, []
            for diff in sorted(early, key=lambda d: d["seq"]):
                self.feed("presence_diff", diff)
        elif event == "presence_diff":
            if self.peers is None:
                self._early.append(message)
            elif message["seq"] <= self.seq:
                pass  # already in the state
            elif message["seq"] != self.seq + 1:
                self.gaps += 1
            else:
                self._apply(message)

    def feed_all(self, inbox: Sequence[Mapping[str, Any]]) -> View:
        for message in inbox:
            self.feed(str(message.get("type")), message)
        return self

    def _apply(self, diff: Mapping[str, Any]) -> None:
        assert self.peers is not None
        self.diffs += 1
        self.seq = diff["seq"]
        self.count = dict(diff["count"])
        for peer, entry in diff["leaves"].items():
            if peer not in self.peers:
                self.errors.append(f"seq {diff['seq']}: {peer} leaves but is not present")
            self.peers.pop(peer, None)
            self.left.append((peer, entry["reason"]))
        for peer, entry in diff["updates"].items():
            if peer not in self.peers:
                self.errors.append(f"seq {diff['seq']}: {peer} is updated but is not present")
            self.peers[peer] = list(entry["metas"])
        for peer, entry in diff["joins"].items():
            if peer in self.peers:
                self.errors.append(f"seq {diff['seq']}: {peer} joins twice")
            self.peers[peer] = list(entry["metas"])
            self.joined.append(peer)
        if self.count != {
            "peers": len(self.peers),
            "connections": sum(len(m) for m in self.peers.values()),
        }:
            self.errors.append(f"seq {diff['seq']}: count {self.count} disagrees with the list")


def server_view(presence: Mapping[Hashable, list[Mapping[str, object]]]) -> dict[str, list[Any]]:
    """The server's ``presence(room)`` as a client holds it (wire ids, lists of metas)."""
    return {str(peer): [dict(meta) for meta in metas] for peer, metas in presence.items()}
