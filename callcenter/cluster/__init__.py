"""Scale-out (issue 10): live state shared through Redis when ``redis_url`` is set.

- :mod:`.election` — one leader at a time (SET NX PX lease + INCR fencing token), sans-I/O.
- :mod:`.messages` — the commands nodes send the leader and the notices it sends back (streams).
- :mod:`.leader` — the unchanged Router over every node's callers and agents, mirrored into Redis so a
  successor rebuilds it, sans-I/O.
- :mod:`.node` — the asyncio driver: heartbeat, election, command/notice streams, fenced writes.
- :mod:`.chats` — the chat ACD over the same agents on the leader (capacity cluster-wide), sans-I/O;
  the node side is :mod:`callcenter.chat.cluster`.
- :mod:`.forwarding` — the Router the Acd talks to on each node (its seam into the cluster).
- :mod:`.bindings` — agents' registrations in Redis: every node rings and recognises every agent;
  presence (log-in / log-out) raised once cluster-wide.
- :mod:`.bridge` — the event bus bridged over Redis pub/sub: live events of every node on every node.
- :mod:`.wiring` — what ``app.py`` builds with ``redis_url``; without it nothing here is imported.
"""
