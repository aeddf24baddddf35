"use strict";
// The status page: renders /api/v1/status and /api/v1/history, then refreshes them in
// place every REFRESH_MS. Relative URLs only (works behind a path prefix) and no other
// host: the Content-Security-Policy allows nothing but this exporter. The DOM is built with
// textContent, never innerHTML, so no string from the API is ever parsed as markup.
(() => {
  const REFRESH_MS = 5000;
  // Where each document comes from; a new section adds its source here and a renderer below.
  const SOURCES = { status: "api/v1/status", history: "api/v1/history" };
  const STATUS = {
    up: { symbol: "\u2714", label: "Up" },
    degraded: { symbol: "\u25B2", label: "Degraded" },
    down: { symbol: "\u2716", label: "Down" },
    unknown: { symbol: "?", label: "Unknown" },
  };
  const LEVEL_SYMBOL = { ok: "\u2714", degraded: "\u25B2", down: "\u2716", local: "\u26A0", unknown: "?" };
  const MIN_SPAN = 60; // seconds: a strip never covers less, so a fresh exporter still shows one

  // -- small helpers -------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const pad = (n) => String(n).padStart(2, "0");
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  // "14:02 UTC", "4 Oct 14:02 UTC" on another day (as the headline says it: exporter/engine/headline.py).
  function utcTime(ts, now, seconds) {
    const d = new Date(ts * 1000);
    const today = new Date(now * 1000);
    let clock = pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
    if (seconds) clock += ":" + pad(d.getUTCSeconds());
    clock += " UTC";
    if (d.toISOString().slice(0, 10) === today.toISOString().slice(0, 10)) return clock;
    let day = d.getUTCDate() + " " + MONTHS[d.getUTCMonth()];
    if (d.getUTCFullYear() !== today.getUTCFullYear()) day += " " + d.getUTCFullYear();
    return day + " " + clock;
  }

  function duration(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return seconds + " s";
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min";
    const hours = Math.floor(minutes / 60);
    if (hours < 48) return hours + " h " + (minutes % 60) + " min";
    return Math.floor(hours / 24) + " days";
  }

  function latency(seconds) {
    if (seconds === null || seconds === undefined) return "\u2013";
    if (seconds >= 10) return seconds.toFixed(1) + " s";
    return Math.max(1, Math.round(seconds * 1000)) + " ms";
  }

  function layerLabel(layer) {
    if (!layer || layer === "none") return null;
    return layer === "content" ? "content" : layer.toUpperCase();
  }

  function condition(status, layer, words) {
    const at = layerLabel(layer);
    const label = (words && words[status]) || (STATUS[status] || STATUS.unknown).label.toLowerCase();
    return at ? label + " at " + at : label;
  }

  // -- history strips ------------------------------------------------------------------

  function span(history) {
    const now = history.now_timestamp;
    let from = Math.max(now - history.window_seconds, history.started_at_timestamp);
    if (now - from < MIN_SPAN) from = now - MIN_SPAN;
    return { from, now };
  }

  function strip(segments, view, what, words) {
    const width = view.now - view.from;
    const box = el("div", { class: "strip", role: "img" });
    const phrases = [];
    for (const segment of segments) {
      const start = Math.max(segment.start_timestamp, view.from);
      const end = segment.end_timestamp === null ? view.now : Math.min(segment.end_timestamp, view.now);
      if (end <= start) continue;
      const text = condition(segment.status, segment.layer, words) + " from " + utcTime(start, view.now, true) +
        (segment.end_timestamp === null ? " until now" : " to " + utcTime(end, view.now, true));
      const bar = el("span", { class: "seg " + segment.status, title: text });
      // CSSOM, not a style attribute: allowed by the page's Content-Security-Policy.
      bar.style.left = ((start - view.from) / width) * 100 + "%";
      bar.style.width = Math.max(((end - start) / width) * 100, 0.4) + "%";
      box.append(bar);
      phrases.push(text);
    }
    const said = phrases.length ? phrases.slice(-4).join("; ") : "no data";
    box.setAttribute("aria-label", what + " history since " + utcTime(view.from, view.now) + ": " + said);
    return box;
  }

  // -- sections ------------------------------------------------------------------------

  function renderHeadline(data) {
    const status = data.status;
    const line = document.getElementById("headline");
    const text = document.getElementById("headline-text");
    line.className = "headline level-" + status.headline.level;
    line.querySelector(".symbol").textContent = LEVEL_SYMBOL[status.headline.level] || "?";
    // Only a real change is written, so screen readers announce changes, not every refresh.
    if (text.textContent !== status.headline.text) text.textContent = status.headline.text;
    document.title = (LEVEL_SYMBOL[status.headline.level] || "") + " " + status.headline.text + " \u2013 Meta status";

    const vantage = status.vantage;
    const view = span(data.history);
    const box = el("div", { class: "vantage" },
      el("p", {}, el("strong", {}, "This network: "),
        (vantage.up ? "online" : "offline") + " \u2013 " + vantage.detail),
      strip(data.history.vantage.segments, view, "This network's", { up: "online", down: "offline" }));
    document.getElementById("vantage").replaceChildren(box);
  }

  function serviceRow(service, history, view, now) {
    const shown = STATUS[service.status] || STATUS.unknown;
    const layer = layerLabel(service.layer);
    const since = service.since_timestamp;
    const past = (history && history.segments) || [];
    return el("tr", { role: "row", class: "status-" + service.status, "data-service": service.name },
      el("th", { role: "rowheader", scope: "row" }, service.display_name,
        el("div", { class: "detail" }, service.detail || "")),
      el("td", { role: "cell", "data-label": "Status" },
        el("span", { class: "badge " + service.status },
          el("span", { "aria-hidden": "true" }, shown.symbol + " "), shown.label)),
      el("td", { role: "cell", "data-label": "Failing layer" },
        layer || el("span", { class: "muted" }, "none")),
      el("td", { role: "cell", "data-label": "Since" },
        since ? utcTime(since, now) : "\u2013",
        since ? el("span", { class: "ago" }, " (for " + duration(now - since) + ")") : null),
      el("td", { role: "cell", "data-label": "Latency", class: "nowrap" }, latency(service.latency_seconds)),
      el("td", { role: "cell", "data-label": "History", class: "col-history" },
        strip(past, view, service.display_name + "'s")));
  }

  function renderServices(data) {
    const now = data.history.now_timestamp;
    const view = span(data.history);
    const histories = Object.fromEntries(data.history.services.map((s) => [s.name, s]));
    const rows = data.status.services.filter((s) => !s.control && s.status)
      .map((s) => serviceRow(s, histories[s.name], view, now));
    const head = el("thead", { role: "rowgroup" },
      el("tr", { role: "row" }, ...["Service", "Status", "Failing layer", "Since", "Latency"]
        .map((name) => el("th", { role: "columnheader", scope: "col" }, name)),
        el("th", { role: "columnheader", scope: "col", class: "col-history" },
          "History since " + utcTime(view.from, now),
          el("div", { class: "axis", "aria-hidden": "true" },
            el("span", {}, utcTime(view.from, now)), el("span", {}, "now")))));
    const table = el("table", { role: "table", "aria-describedby": "legend" }, head,
      el("tbody", { role: "rowgroup" }, ...rows));
    const legend = el("p", { class: "legend", id: "legend" }, "History: ",
      ...["up", "degraded", "down", "unknown"].flatMap((status) => [
        el("span", { class: "seg " + status, "aria-hidden": "true" }), " " + STATUS[status].label + " ",
      ]), "(striped background: the exporter was not running). Times are UTC.");
    document.getElementById("services-body").replaceChildren(table, legend);
  }

  function renderUpdated(data, failure) {
    const updated = document.getElementById("updated");
    const when = utcTime(data.history.now_timestamp, data.history.now_timestamp, true);
    if (failure) {
      updated.className = "updated stale";
      updated.textContent = "Cannot reach the exporter (" + failure + "); showing data from " + when + ".";
    } else {
      updated.className = "updated";
      updated.textContent = "Updated " + when + "; refreshes every " + REFRESH_MS / 1000 + " s.";
    }
  }

  // Meta's status page and BGP (docs/verdict.md, "Feeds"); hidden when no feed is configured.
  const OFFICIAL = {
    no_issues: { symbol: "\u2714", label: "no known issues" },
    low_disruption: { symbol: "\u25B2", label: "low disruptions" },
    medium_disruption: { symbol: "\u25B2", label: "medium disruptions" },
    major_disruption: { symbol: "\u2716", label: "major disruptions" },
    unknown: { symbol: "?", label: "status not understood" },
  };
  const FEED_NAMES = {
    official_status: "Meta's status page",
    bgp: "RIS Live (BGP)",
    bgp_seed: "RIPEstat looking glass",
    bgp_baseline: "RIPEstat routing status",
  };

  function renderFeeds(data) {
    const feeds = data.status.feeds;
    const section = document.getElementById("feeds");
    section.hidden = !feeds || feeds.health.length === 0;
    if (section.hidden) return;
    const now = data.history.now_timestamp;
    const parts = [];
    const down = feeds.health.filter((h) => !h.up);
    if (down.length) {
      parts.push(el("p", { class: "feed-down" }, el("span", { "aria-hidden": "true" }, "\u26A0 "),
        down.map((h) => (FEED_NAMES[h.feed] || h.feed) + " cannot be read: " + h.detail).join("; "),
        " (this is not a Meta outage)."));
    }
    if (feeds.official) {
      const names = Object.fromEntries(data.status.services.map((s) => [s.name, s.display_name]));
      const items = Object.entries(feeds.official.services).map(([name, word]) => {
        const shown = OFFICIAL[word.status] || OFFICIAL.unknown;
        let text = (names[name] || name) + ": " + shown.label;
        if (word.disrupted_since) text += " since " + utcTime(Date.parse(word.disrupted_since) / 1000, now);
        if (word.acknowledgement_lag_seconds !== null) {
          const lag = word.acknowledgement_lag_seconds;
          text += lag >= 0 ? " (admitted " + duration(lag) + " after we saw it down)"
            : " (said " + duration(-lag) + " before we saw it down)";
        }
        return el("li", { class: "official " + word.status, title: word.detail },
          el("span", { "aria-hidden": "true" }, shown.symbol + " "), text);
      });
      parts.push(el("h3", {}, "Meta's status page says"),
        items.length ? el("ul", {}, ...items) : el("p", { class: "muted" }, "No service here has a status org."));
    }
    if (feeds.bgp) {
      const items = feeds.bgp.prefixes.map((p) => {
        const known = p.peers_seeing + p.peers_withdrawn;
        const text = p.prefix + ": " + (p.withdrawn ? "WITHDRAWN by " + p.peers_withdrawn + " of " + known
          : "seen by " + p.peers_seeing + " of " + known) + " RIS peers heard from" +
          (p.seeded === false ? " (not judged yet: waiting for RIPEstat's looking glass)" : "") +
          (p.last_withdrawal ? "; last withdrawal " + utcTime(Date.parse(p.last_withdrawal) / 1000, now, true) : "");
        return el("li", { class: p.withdrawn ? "bgp withdrawn" : "bgp" },
          el("span", { "aria-hidden": "true" }, (p.withdrawn ? "\u2716" : "\u2714") + " "), text);
      });
      parts.push(el("h3", {}, "BGP routes to Meta's nameservers"),
        !feeds.bgp.connected ? el("p", { class: "muted" }, "Not known: the BGP stream is not connected.")
          : items.length ? el("ul", {}, ...items) : el("p", { class: "muted" }, "No prefix watched."));
    }
    document.getElementById("feeds-body").replaceChildren(...parts);
  }

  const RENDERERS = [renderHeadline, renderServices, renderFeeds];

  // -- data ----------------------------------------------------------------------------

  let current = {
    status: JSON.parse(document.getElementById("initial-status").textContent),
    history: JSON.parse(document.getElementById("initial-history").textContent),
  };

  function render(failure) {
    for (const renderer of RENDERERS) renderer(current);
    renderUpdated(current, failure);
  }

  async function fetchJson(url) {
    const response = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error("HTTP " + response.status);
    return response.json();
  }

  async function refresh() {
    try {
      const names = Object.keys(SOURCES);
      const documents = await Promise.all(names.map((name) => fetchJson(SOURCES[name])));
      current = Object.fromEntries(names.map((name, i) => [name, documents[i]]));
      render(null);
    } catch (error) {
      render(error.message || "network error");
    } finally {
      setTimeout(refresh, REFRESH_MS);
    }
  }

  render(null);
  setTimeout(refresh, REFRESH_MS);
})();
