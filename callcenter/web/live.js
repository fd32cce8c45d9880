// The live feed: the /api/live WebSocket when the server has it, else polling the REST routes.
//
// Pages give `refresh()` (re-read what they show over REST). Every event pushed on the WebSocket
// schedules one refresh (events that arrive together are merged), so a page shows the change within a
// round trip; the first `snapshot` message is handed to `onSnapshot`. When the socket cannot be opened
// or drops, the page polls every `pollMs` and tries the socket again with a growing back-off.

const DEBOUNCE_MS = 50;

export class LiveFeed {
  constructor({ refresh, onSnapshot = null, onEvent = null, pollMs = 2000, liveRefreshMs = 15000 }) {
    this.refresh = refresh;
    this.onSnapshot = onSnapshot;
    this.onEvent = onEvent;
    this.pollMs = pollMs;
    this.liveRefreshMs = liveRefreshMs; // a slow safety refresh while the socket is up
    this.mode = "starting";
    this.socket = null;
    this.timer = null;
    this.pending = null;
    this.retryMs = 1000;
    this.running = false;
  }

  start() {
    this.running = true;
    this.tick();
    this.connect();
  }

  stop() {
    this.running = false;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close();
  }

  setMode(mode) {
    this.mode = mode;
    const status = document.getElementById("live-status");
    if (status) {
      status.textContent = mode === "live" ? "● live" : mode === "polling" ? "○ polling" : "";
      status.dataset.mode = mode;
    }
    this.schedule();
  }

  schedule() {
    clearTimeout(this.timer);
    if (!this.running) return;
    this.timer = setTimeout(() => this.tick(), this.mode === "live" ? this.liveRefreshMs : this.pollMs);
  }

  async tick() {
    try {
      await this.refresh();
    } catch (error) {
      console.warn("refresh failed", error);
    }
    this.schedule();
  }

  soon() {
    if (this.pending) return;
    this.pending = setTimeout(async () => {
      this.pending = null;
      await this.tick();
    }, DEBOUNCE_MS);
  }

  connect() {
    if (!this.running || typeof WebSocket === "undefined") {
      this.setMode("polling");
      return;
    }
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    let socket;
    try {
      socket = new WebSocket(`${scheme}://${location.host}/api/live`);
    } catch {
      this.setMode("polling");
      return;
    }
    this.socket = socket;
    let opened = false;
    socket.addEventListener("open", () => {
      opened = true;
      this.retryMs = 1000;
      this.setMode("live");
    });
    socket.addEventListener("message", (message) => {
      let data;
      try { data = JSON.parse(message.data); } catch { return; }
      if (data.type === "ping") {
        socket.send(JSON.stringify({ type: "pong" }));
        return;
      }
      if (data.type === "pong") return;
      if (data.type === "snapshot" && this.onSnapshot) this.onSnapshot(data);
      else if (this.onEvent) this.onEvent(data);
      this.soon();
    });
    socket.addEventListener("close", (event) => {
      this.socket = null;
      if (!this.running) return;
      if (event.code === 4401) {
        location.assign(`/?next=${encodeURIComponent(location.pathname)}&why=login`);
        return;
      }
      this.setMode("polling");
      // Not there yet (404 before the upgrade) or dropped: poll, and look again later.
      this.retryMs = opened ? 1000 : Math.min(this.retryMs * 2, 30000);
      setTimeout(() => this.connect(), this.retryMs);
    });
  }
}
