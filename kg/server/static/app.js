// The kg web page: search, a force-directed graph around a concept (cytoscape, vendored),
// a concept's evidence, runs with live progress (Server-Sent Events read through fetch, so the
// bearer token travels in a header, never in a URL), and the active profile.
// The token lives in sessionStorage: this tab only, gone when it closes. The URL `kg serve`
// prints at its first start carries one in the fragment (#token=...); the page moves it into
// sessionStorage and removes it from the address bar and the history.
// Everything shown comes from the JSON API; text is always set with textContent.
"use strict";

(function () {
  const TOKEN_KEY = "kg.token";
  const state = {
    cy: null,
    center: null,
    selected: null,
    scope: null,
    watching: new Set(),
    latest: { graph: 0, concept: 0 }, // only the newest answer of each kind is shown
    runs: new Map(), // run id -> list item
  };
  window.kg = state; // for the browser tests and the curious

  const $ = (id) => document.getElementById(id);
  const el = (tag, text, cls) => {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  };
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // -- talking to the API -----------------------------------------------------------------
  function authHeaders() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    return token ? { Authorization: "Bearer " + token } : {};
  }

  function takeToken() {
    // Earlier versions kept the token in localStorage (every tab, no expiry): never again.
    localStorage.removeItem(TOKEN_KEY);
    const params = new URLSearchParams(location.hash.slice(1));
    const token = params.get("token");
    if (token === null) return;
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
  }

  async function api(path, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    opts.headers = Object.assign({}, authHeaders(), opts.headers);
    const response = await fetch(path, opts);
    let body = null;
    const type = response.headers.get("content-type") || "";
    if (type.startsWith("application/json")) body = await response.json();
    if (!response.ok) {
      const error = new Error((body && body.error) || response.status + " " + response.statusText);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  function message(text, kind) {
    const box = $("message");
    box.textContent = text || "";
    box.className = kind || "";
    box.hidden = !text;
  }

  function failed(error) {
    if (error.status === 401) {
      message(error.message + " Paste a token in the box at the top right.");
      $("token").focus();
    } else {
      message(error.message);
    }
  }

  // -- who am I, profiles -----------------------------------------------------------------
  async function whoami() {
    try {
      const me = await api("/whoami");
      state.scope = me.scope;
      $("whoami").textContent = me.tokens_required ? me.name + " (" + me.scope + ")" : "no token needed";
      document.body.classList.toggle("read-only", me.scope !== "admin");
      return true;
    } catch (error) {
      state.scope = null;
      $("whoami").textContent = "";
      document.body.classList.add("read-only");
      failed(error);
      return false;
    }
  }

  async function loadProfiles() {
    const select = $("profile-select");
    const rows = await api("/profiles");
    select.replaceChildren();
    for (const p of rows) {
      const option = el("option", p.name + " (" + p.provider + " " + p.model + ")");
      option.value = p.name;
      option.selected = p.active;
      if (p.active) option.dataset.active = "true";
      select.appendChild(option);
    }
  }

  async function activateProfile() {
    const name = $("profile-select").value;
    try {
      const result = await api("/profiles/" + encodeURIComponent(name) + "/activate", { method: "POST" });
      message(result.changed ? "Active profile: " + name : name + " is already active", "info");
      await loadProfiles();
    } catch (error) {
      failed(error);
    }
  }

  // -- search -----------------------------------------------------------------------------
  async function search(text) {
    const list = $("result-list");
    const query = text ? "?limit=30&search=" + encodeURIComponent(text) : "?limit=30";
    const rows = await api("/concepts" + query);
    list.replaceChildren();
    if (!rows.length) list.appendChild(el("li", "No concept matches.", "muted"));
    for (const c of rows) {
      const item = el("li", c.label, "clickable concept-result");
      item.dataset.id = c.id;
      item.appendChild(el("span", c.mentions, "count"));
      item.addEventListener("click", () => showGraph(String(c.id)));
      list.appendChild(item);
    }
    return rows;
  }

  // -- the graph --------------------------------------------------------------------------
  function ensureGraph() {
    if (state.cy) return state.cy;
    state.cy = cytoscape({
      container: $("graph"),
      minZoom: 0.2,
      maxZoom: 3,
      style: [
        { selector: "node", style: {
          "label": "data(label)", "font-size": 14, "color": "#1d2733", "text-valign": "bottom",
          "text-margin-y": 4, "background-color": "#7aa6d1", "width": 20, "height": 20,
          "text-wrap": "wrap", "text-max-width": 120, "text-background-color": "#ffffff",
          "text-background-opacity": 0.8, "text-background-padding": 1 } },
        { selector: "node.center", style: { "background-color": "#1f4e79", "width": 30, "height": 30,
          "font-weight": "bold" } },
        { selector: "node:selected", style: { "border-width": 3, "border-color": "#f0a202" } },
        { selector: "edge", style: {
          "width": "mapData(confidence, 0, 1, 1, 5)", "line-color": "#aab6c3",
          "target-arrow-color": "#aab6c3", "target-arrow-shape": "triangle", "curve-style": "bezier",
          "label": "data(type)", "font-size": 10, "color": "#5f6b7a", "text-rotation": "autorotate",
          "text-background-color": "#ffffff", "text-background-opacity": 0.8 } },
        { selector: ".hidden", style: { "display": "none" } },
      ],
    });
    state.cy.on("tap", "node", (event) => showConcept(event.target.id()));
    state.cy.on("dbltap", "node", (event) => expand(event.target.id()));
    return state.cy;
  }

  function elementsOf(view) {
    const items = [];
    for (const n of view.nodes) {
      items.push({ group: "nodes", data: { id: String(n.id), label: n.label, distance: n.distance } });
    }
    for (const e of view.edges) {
      items.push({ group: "edges", data: { id: "e" + e.id, source: String(e.source),
        target: String(e.target), type: e.type, confidence: e.confidence, evidence: e.evidence } });
    }
    return items;
  }

  // New nodes start on a spiral around `origin` (no randomness: the same graph is drawn the
  // same way every time), then the force-directed layout settles them.
  function place(nodes, origin) {
    nodes.forEach((node, i) => {
      const angle = i * 2.39996;
      const radius = 40 * Math.sqrt(i + 1);
      node.position({ x: origin.x + radius * Math.cos(angle), y: origin.y + radius * Math.sin(angle) });
    });
  }

  // Labels stay readable: a large view is not shrunk below MIN_ZOOM to fit; it is centred
  // on the concept it was drawn around (scroll to zoom out, drag to pan).
  const MIN_ZOOM = 0.85;
  const MAX_FIT_ZOOM = 1.4;

  function layout() {
    const cy = state.cy;
    cy.layout({ name: "cose", animate: false, randomize: false, fit: true, padding: 30,
      nodeDimensionsIncludeLabels: true, nodeRepulsion: () => 7000, nodeOverlap: 20,
      idealEdgeLength: () => 70, gravity: 3, numIter: 2500, componentSpacing: 60 }).run();
    const focus = state.center ? cy.getElementById(state.center) : cy.collection();
    if (cy.zoom() < MIN_ZOOM) {
      cy.zoom(MIN_ZOOM);
      cy.center(focus.nonempty() ? focus : undefined);
    } else if (cy.zoom() > MAX_FIT_ZOOM) {
      cy.zoom(MAX_FIT_ZOOM);
      cy.center();
    }
  }

  async function showGraph(ref) {
    const depth = $("depth").value;
    const asked = ++state.latest.graph;
    let view;
    try {
      view = await api("/graph?limit=200&depth=" + depth + "&center=" + encodeURIComponent(ref));
    } catch (error) {
      failed(error);
      return;
    }
    if (asked !== state.latest.graph) return; // a newer request took over
    message("");
    const cy = ensureGraph();
    cy.elements().remove();
    place(cy.add(elementsOf(view)).nodes(), { x: 0, y: 0 });
    state.center = String(view.center.id);
    cy.$id(state.center).addClass("center");
    layout();
    updateTypeFilters();
    applyFilters();
    $("graph-status").textContent = view.nodes.length + " concepts, " + view.edges.length +
      " relationships within " + view.depth + " of " + view.center.label +
      (view.truncated ? " (more exist: the view shows the closest)" : "") +
      ". Click a concept for its evidence; double-click to expand it.";
    for (const item of document.querySelectorAll(".concept-result")) {
      item.classList.toggle("active", item.dataset.id === state.center);
    }
    await showConcept(state.center);
    $("graph").dataset.drawn = String(asked); // this view and its concept are on screen
  }

  async function expand(id) {
    let view;
    try {
      view = await api("/graph?depth=1&limit=100&center=" + encodeURIComponent(id));
    } catch (error) {
      failed(error);
      return;
    }
    const cy = ensureGraph();
    const fresh = elementsOf(view).filter((item) => cy.getElementById(item.data.id).empty());
    place(cy.add(fresh).nodes(), cy.getElementById(String(view.center.id)).position());
    if (fresh.length) layout();
    updateTypeFilters();
    applyFilters();
    $("graph-status").textContent = "Expanded " + view.center.label + ": " + fresh.length +
      " new elements; " + cy.nodes().length + " concepts shown.";
  }

  function updateTypeFilters() {
    const box = $("type-filters");
    const checked = new Map();
    for (const input of box.querySelectorAll("input")) checked.set(input.value, input.checked);
    const types = [...new Set(state.cy.edges().map((e) => e.data("type")))].sort();
    box.replaceChildren();
    for (const type of types) {
      const label = el("label");
      const input = el("input");
      input.type = "checkbox";
      input.value = type;
      input.checked = checked.has(type) ? checked.get(type) : true;
      input.addEventListener("change", applyFilters);
      label.append(input, document.createTextNode(type));
      box.appendChild(label);
    }
    if (!types.length) box.appendChild(el("span", "none yet", "muted"));
  }

  function applyFilters() {
    if (!state.cy) return;
    const minimum = Number($("min-confidence").value);
    $("min-confidence-value").textContent = minimum.toFixed(2);
    const shown = new Set();
    for (const input of $("type-filters").querySelectorAll("input")) {
      if (input.checked) shown.add(input.value);
    }
    state.cy.batch(() => {
      state.cy.edges().forEach((edge) => {
        const visible = shown.has(edge.data("type")) && edge.data("confidence") >= minimum;
        edge.toggleClass("hidden", !visible);
      });
      state.cy.nodes().forEach((node) => {
        const linked = node.connectedEdges().some((edge) => !edge.hasClass("hidden"));
        node.toggleClass("hidden", !linked && node.id() !== state.center);
      });
    });
  }

  // -- one concept --------------------------------------------------------------------------
  async function showConcept(id) {
    const asked = ++state.latest.concept;
    let concept;
    try {
      concept = await api("/concepts/" + encodeURIComponent(id) + "?evidence=50");
    } catch (error) {
      failed(error);
      return;
    }
    if (asked !== state.latest.concept) return; // the user clicked another one meanwhile
    state.selected = String(concept.id);
    if (state.cy) {
      state.cy.nodes().unselect();
      state.cy.$id(state.selected).select();
    }
    $("detail-label").textContent = concept.label;
    $("detail-body").hidden = false;
    $("detail-type").textContent = concept.type ? "Type: " + concept.type : "";
    $("detail-description").textContent = concept.description || "";
    const aliases = $("detail-aliases");
    aliases.replaceChildren();
    for (const alias of concept.aliases) aliases.appendChild(el("li", alias));
    if (!concept.aliases.length) aliases.appendChild(el("li", "none"));
    const relationships = $("detail-relationships");
    relationships.replaceChildren();
    for (const r of concept.relationships) {
      const item = el("li", null, "clickable");
      const arrow = r.direction === "out" ? "→ " : "← ";
      item.append(document.createTextNode(arrow), el("span", r.type, "rel-type"),
        document.createTextNode(" " + r.concept + " "), el("span", Number(r.confidence).toFixed(2), "count"));
      item.addEventListener("click", () => showGraph(r.concept));
      relationships.appendChild(item);
    }
    if (!concept.relationships.length) relationships.appendChild(el("li", "none", "muted"));
    const evidence = $("detail-evidence");
    evidence.replaceChildren();
    let shown = 0;
    for (const e of concept.evidence) {
      const item = el("li");
      item.appendChild(el("blockquote", e.quote, "quote"));
      item.appendChild(el("div", e.document + " · characters " + e.char_start + "–" + e.char_end +
        " · run " + e.run_id + placesText(e.places), "where"));
      evidence.appendChild(item);
      if (e.places && e.places.length && shown < PAGES_SHOWN) {
        shown += 1;
        showPage(item, e.document, e.places);
      }
    }
    if (!concept.evidence.length) evidence.appendChild(el("li", "no evidence", "muted"));
  }

  // -- the page an OCR quote came from: a thumbnail with the quote's box highlighted ---------
  const PAGES_SHOWN = 10; // thumbnails per concept: the first quotes are enough to see where
  const documentIds = new Map(); // path -> id (the evidence names documents by path)
  const pageImages = new Map(); // "id/page" -> promise of {url, width, height}

  function placesText(places) {
    if (!places || !places.length) return "";
    return " · page " + Array.from(new Set(places.map((p) => p.page))).join(", ");
  }

  async function documentId(path) {
    if (!documentIds.has(path)) {
      const rows = await api("/documents?limit=100&search=" + encodeURIComponent(path));
      const found = rows.find((d) => d.path === path);
      if (!found) throw new Error("the document " + path + " is no longer listed");
      documentIds.set(path, found.id);
    }
    return documentIds.get(path);
  }

  async function pageImage(id, page) {
    const key = id + "/" + page;
    if (!pageImages.has(key)) {
      const loading = (async () => {
        const response = await fetch("/documents/" + id + "/page/" + page, { headers: authHeaders() });
        if (!response.ok) {
          const type = response.headers.get("content-type") || "";
          const body = type.startsWith("application/json") ? await response.json() : null;
          throw new Error((body && body.error) || response.status + " " + response.statusText);
        }
        const blob = await response.blob();
        // A data: URL, as the page's content security policy allows images from 'self' and data:.
        const url = await new Promise((resolve, reject) => {
          const reader = new FileReader();
          reader.onload = () => resolve(reader.result);
          reader.onerror = () => reject(reader.error);
          reader.readAsDataURL(blob);
        });
        return { url: url, width: Number(response.headers.get("x-page-width")),
                 height: Number(response.headers.get("x-page-height")) };
      })();
      loading.catch(() => pageImages.delete(key)); // a failure is not remembered: retry later
      pageImages.set(key, loading);
    }
    return pageImages.get(key);
  }

  async function showPage(item, path, places) {
    const page = places[0].page;
    const frame = el("div", null, "page-thumb");
    item.appendChild(frame);
    try {
      const image = await pageImage(await documentId(path), page);
      const img = el("img");
      img.src = image.url;
      img.alt = "page " + page + " of " + path;
      frame.appendChild(img);
      // Boxes are pixels of the page as read; percentages keep them on the thumbnail at any size.
      for (const p of places) {
        if (p.page !== page || !p.box || !image.width || !image.height) continue;
        const [x0, y0, x1, y1] = p.box;
        const mark = el("div", null, "page-box");
        mark.style.left = (100 * x0 / image.width) + "%";
        mark.style.top = (100 * y0 / image.height) + "%";
        mark.style.width = (100 * (x1 - x0) / image.width) + "%";
        mark.style.height = (100 * (y1 - y0) / image.height) + "%";
        frame.appendChild(mark);
      }
    } catch (error) {
      frame.replaceWith(el("div", "page " + page + " not shown: " + error.message, "muted page-missing"));
    }
  }

  // -- runs ---------------------------------------------------------------------------------
  function runItem(run) {
    let item = state.runs.get(run.id);
    if (!item) {
      item = el("li", null, "run");
      item.dataset.run = run.id;
      item.append(el("strong", "Run " + run.id), el("span", "", "status"), el("span", "", "counts"),
        el("progress"));
      const cancel = el("button", "Cancel", "secondary admin-only cancel");
      cancel.type = "button";
      cancel.hidden = true;
      cancel.addEventListener("click", () => cancelRun(run.id));
      item.appendChild(cancel);
      state.runs.set(run.id, item);
    }
    return item;
  }

  function paint(item, run) {
    const status = item.querySelector(".status");
    status.textContent = run.status;
    status.className = "status " + run.status;
    const done = run.chunks_ok + run.chunks_failed;
    item.querySelector(".counts").textContent = done + "/" + run.chunks_total + " chunks" +
      (run.chunks_failed ? ", " + run.chunks_failed + " failed" : "");
    const bar = item.querySelector("progress");
    bar.max = Math.max(run.chunks_total, 1);
    bar.value = done;
    item.querySelector(".cancel").hidden = !(run.status === "running" && run.cancellable !== false);
  }

  async function refreshRuns() {
    let rows;
    try {
      rows = await api("/runs?limit=8");
    } catch (error) {
      return;
    }
    const list = $("run-list");
    list.replaceChildren();
    for (const run of rows) {
      const item = runItem(run);
      paint(item, run);
      list.appendChild(item);
      if (run.status === "running") watch(run.id);
    }
    if (!rows.length) list.appendChild(el("li", "No runs yet.", "muted"));
  }

  function log(text, cls) {
    const list = $("run-log");
    list.insertBefore(el("li", text, cls), list.firstChild);
    while (list.children.length > 60) list.removeChild(list.lastChild);
  }

  function onEvent(runId, event) {
    const data = JSON.parse(event.data);
    const item = state.runs.get(runId);
    if (event.event === "progress" || event.event === "finished") {
      if (item) paint(item, Object.assign({ cancellable: event.event !== "finished" }, data));
    }
    if (event.event === "chunk") {
      log("run " + runId + ": " + data.document.split("/").pop() + " chunk " + data.ordinal + ": " +
        data.concepts + " concepts, " + data.relationships + " relationships", "chunk");
    } else if (event.event === "chunk_failed") {
      log("run " + runId + ": " + data.document.split("/").pop() + " chunk " + data.ordinal +
        " failed: " + data.error, "failed");
    } else if (event.event === "finished") {
      log("run " + runId + " " + data.status + ": " + data.chunks_ok + " chunks ok, " +
        data.chunks_failed + " failed, " + data.calls + " LLM calls", "finished");
    }
  }

  function parseBlock(block) {
    const event = { event: "message", data: "", id: null };
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const at = line.indexOf(":");
      const field = at < 0 ? line : line.slice(0, at);
      const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
      if (field === "event") event.event = value;
      else if (field === "data") data.push(value);
      else if (field === "id") event.id = value;
    }
    event.data = data.join("\n");
    return data.length ? event : null;
  }

  // Server-Sent Events through fetch: EventSource cannot send an Authorization header.
  // Server-Sent Events from a fetch response (EventSource cannot send the token header):
  // each complete block, parsed, to `onBlock`, until the stream ends.
  async function readEvents(response, onBlock) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = parseBlock(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
        if (block) onBlock(block);
      }
    }
  }

  async function watch(runId) {
    if (state.watching.has(runId)) return;
    state.watching.add(runId);
    let lastId = null;
    let finished = false;
    try {
      while (!finished) {
        const headers = authHeaders();
        if (lastId) headers["Last-Event-ID"] = lastId;
        let response;
        try {
          response = await fetch("/runs/" + runId + "/events", { headers: headers });
        } catch (error) {
          await sleep(2000);
          continue;
        }
        if (!response.ok) break;
        await readEvents(response, (event) => {
          if (event.id) lastId = event.id;
          onEvent(runId, event);
          if (event.event === "finished") finished = true;
        });
        if (!finished) await sleep(2000);
      }
    } finally {
      state.watching.delete(runId);
    }
    if (finished) {
      refreshRuns();
      search($("search").value.trim()).catch(() => {});
    }
  }

  async function startRun(event) {
    event.preventDefault();
    const files = $("run-files").files;
    if (!files.length) {
      message("Choose one or more documents to ingest.");
      return;
    }
    const form = new FormData();
    for (const file of files) form.append("files", file);
    try {
      const result = await api("/runs", { method: "POST", body: form });
      if (result.run_id) {
        message("Run " + result.run_id + " started.", "info");
        await refreshRuns();
        watch(result.run_id);
      } else {
        message("Nothing to do: " + result.status + ".", "info");
      }
      $("run-files").value = "";
    } catch (error) {
      failed(error);
    }
  }

  async function cancelRun(runId) {
    try {
      await api("/runs/" + runId + "/cancel", { method: "POST" });
      message("Cancelling run " + runId + "…", "info");
    } catch (error) {
      failed(error);
    }
  }

  // -- duplicates: the grey zone of entity resolution ----------------------------------------
  function named(label, type) {
    const part = el("span", label);
    if (type) part.appendChild(el("span", " (" + type + ")", "type"));
    return part;
  }

  function duplicateItem(pair) {
    const item = el("li", null, "duplicate");
    item.dataset.a = pair.a;
    item.dataset.b = pair.b;
    const names = el("span", null, "pair");
    names.append(named(pair.a_label, pair.a_type), " ≈ ", named(pair.b_label, pair.b_type));
    const signals = Object.entries(pair.signals || {}).filter(([, value]) => Number(value) > 0)
      .map(([name, value]) => name + " " + Number(value).toFixed(2)).join(", ");
    item.append(names, el("span", "score " + pair.score.toFixed(2) + (signals ? " · " + signals : ""), "why"));
    const actions = el("div", null, "actions admin-only");
    const accept = el("button", "Accept", "accept");
    accept.type = "button";
    accept.title = "Merge the two concepts";
    accept.addEventListener("click", () => decide("accept", pair, item));
    const reject = el("button", "Reject", "reject secondary");
    reject.type = "button";
    reject.title = "Keep the two concepts apart";
    reject.addEventListener("click", () => decide("reject", pair, item));
    actions.append(accept, reject);
    item.appendChild(actions);
    return item;
  }

  // A list of the panel refilled from the API; `loaded` counts refills (the browser tests wait
  // on it).
  function fill(id, rows, empty, item) {
    const list = $(id);
    list.replaceChildren();
    if (!rows.length) list.appendChild(el("li", empty, "muted"));
    for (const row of rows) list.appendChild(item(row));
    list.dataset.loaded = String(Number(list.dataset.loaded || "0") + 1);
  }

  async function loadDuplicates() {
    fill("duplicate-list", await api("/duplicates?limit=50"), "No pairs to review.", duplicateItem);
  }

  function decisionItem(decision) {
    const item = el("li", null, "decision" + (decision.undone_at ? " undone" : ""));
    item.dataset.id = decision.id;
    item.append(el("span", decision.summary, "summary"),
      el("span", decision.action + " · " + decision.by + (decision.undone_at ? " · undone" : ""), "why"));
    if (!decision.undone_at) {
      const undo = el("button", "Undo", "undo secondary admin-only");
      undo.type = "button";
      undo.title = "Put back what this decision changed";
      undo.addEventListener("click", () => undoDecision(decision, undo));
      item.appendChild(undo);
    }
    return item;
  }

  async function loadDecisions() {
    fill("decision-list", await api("/curation?limit=10"), "No decisions yet.", decisionItem);
  }

  async function undoDecision(decision, button) {
    button.disabled = true;
    try {
      const result = await api("/curation/" + decision.id + "/undo", { method: "POST" });
      await loadDuplicates();
      await loadDecisions();
      await search($("search").value.trim());
      message("Undone: " + result.summary + " (decision " + result.id + ")", "info");
    } catch (error) {
      button.disabled = false;
      failed(error);
    }
  }

  async function decide(verb, pair, item) {
    for (const button of item.querySelectorAll("button")) button.disabled = true;
    try {
      const result = await api("/duplicates/" + verb, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ a: pair.a, b: pair.b }),
      });
      await loadDuplicates();
      await loadDecisions();
      await search($("search").value.trim());
      // The concept on screen may be the one merged away: either label finds the survivor
      // now (the merged one's label is its alias).
      if (verb === "accept" && [String(pair.a), String(pair.b)].includes(String(state.center))) {
        await showGraph(pair.a_label);
      }
      message(result.summary + " (decision " + result.id + ")", "info");
    } catch (error) {
      for (const button of item.querySelectorAll("button")) button.disabled = false;
      failed(error);
    }
  }

  // -- ask ------------------------------------------------------------------------------------
  function citeLink(id) {
    const link = el("a", "[" + id + "]", "cite");
    link.href = "#evidence-" + id;
    link.addEventListener("click", (event) => {
      event.preventDefault();
      openEvidence(id);
    });
    return link;
  }

  function showCitations(items) {
    const list = $("answer-citations");
    list.replaceChildren();
    for (const e of items) {
      const item = el("li", null, "clickable");
      item.appendChild(citeLink(e.id));
      item.appendChild(el("blockquote", e.quote, "quote"));
      const pages = e.pages && e.pages.length ? " · page " + e.pages.join(", ") : "";
      item.appendChild(el("div", e.document + " · characters " + e.char_start + "–" +
        e.char_end + pages + " · about " + e.subject, "where"));
      item.addEventListener("click", () => openEvidence(e.id));
      list.appendChild(item);
    }
  }

  function onAskEvent(name, data) {
    const box = $("answer");
    if (name === "retrieved") {
      box.replaceChildren(el("p", data.evidence.length + " evidence quote(s) retrieved" +
        ($("ask-no-llm").checked ? "" : "; the model is writing the answer…"), "muted"));
      if ($("ask-no-llm").checked) showCitations(data.evidence);
    } else if (name === "answer") {
      box.replaceChildren();
      if (!data.answer.found) {
        box.appendChild(el("p", data.answer.text, "not-found"));
        return;
      }
      for (const s of data.answer.sentences) {
        const p = el("p", s.text + " ");
        for (const id of s.citations) p.appendChild(citeLink(id));
        box.appendChild(p);
      }
      showCitations(data.citations);
    } else if (name === "error") {
      box.replaceChildren(el("p", data.error, "error"));
    }
  }

  async function ask(event) {
    event.preventDefault();
    const question = $("question").value.trim();
    if (!question) return;
    $("answer").replaceChildren(el("p", "Looking in the graph…", "muted"));
    $("answer-citations").replaceChildren();
    $("evidence-view").hidden = true;
    const headers = Object.assign({ "Content-Type": "application/json" }, authHeaders());
    try {
      const response = await fetch("/ask", { method: "POST", headers: headers,
        body: JSON.stringify({ question: question, no_llm: $("ask-no-llm").checked }) });
      if (!response.ok) {
        let body = null;
        try { body = await response.json(); } catch (ignored) { body = null; }
        const error = new Error((body && body.error) || response.status + " " + response.statusText);
        error.status = response.status;
        throw error;
      }
      await readEvents(response, (block) => onAskEvent(block.event, JSON.parse(block.data)));
    } catch (error) {
      $("answer").replaceChildren();
      failed(error);
    }
  }

  // The quote highlighted in the text of its chunk.
  async function openEvidence(id) {
    let e;
    try {
      e = await api("/evidence/" + encodeURIComponent(id));
    } catch (error) {
      failed(error);
      return;
    }
    const pages = e.pages && e.pages.length ? " · page " + e.pages.join(", ") : "";
    $("evidence-title").textContent = "[" + e.id + "] " + e.document + " · characters " +
      e.char_start + "–" + e.char_end + pages;
    const text = $("evidence-text");
    text.replaceChildren(document.createTextNode(e.chunk.slice(0, e.quote_start)),
      el("mark", e.chunk.slice(e.quote_start, e.quote_end)),
      document.createTextNode(e.chunk.slice(e.quote_end)));
    $("evidence-view").hidden = false;
    const mark = text.querySelector("mark");
    if (mark && mark.scrollIntoView) mark.scrollIntoView({ block: "nearest" });
  }

  // -- start ----------------------------------------------------------------------------------
  async function start() {
    takeToken();
    $("search-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const rows = await search($("search").value.trim());
        if (rows.length) await showGraph(String(rows[0].id));
      } catch (error) {
        failed(error);
      }
    });
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token").value.trim();
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
      $("token").value = "";
      load();
    });
    $("profile-activate").addEventListener("click", activateProfile);
    $("run-form").addEventListener("submit", startRun);
    $("ask-form").addEventListener("submit", ask);
    $("expand").addEventListener("click", () => state.selected && expand(state.selected));
    $("depth").addEventListener("change", () => state.center && showGraph(state.center));
    $("min-confidence").addEventListener("input", applyFilters);
    await load();
  }

  async function load() {
    if (!(await whoami())) {
      document.body.dataset.ready = "true";
      return;
    }
    message("");
    try {
      await loadProfiles();
      const rows = await search("");
      await refreshRuns();
      // The grey zone scores pairs over the whole collection: the page does not wait for it.
      loadDuplicates().catch(failed);
      loadDecisions().catch(failed);
      const wanted = new URLSearchParams(location.hash.slice(1)).get("concept");
      if (wanted) await showGraph(wanted);
      else if (rows.length) await showGraph(String(rows[0].id));
    } catch (error) {
      failed(error);
    }
    document.body.dataset.ready = "true";
  }

  document.addEventListener("DOMContentLoaded", start);
})();
