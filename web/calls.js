"use strict";

// The tab bar and the Calls view: the list of recorded and uploaded calls (filters, totals, exports),
// uploads with their progress, and one call's page (player, transcript that seeks the player, tags,
// export, delete). Views follow the address: #/talk, #/calls, #/calls/<id>, so reloading keeps the place.
// Requests go through auth.js (window.voiceAuth), which adds the token and shows the login form on a 401.

(() => {
  const PAGE_SIZE = 50;
  const POLL_MS = 1000;
  const TOP_TAGS = 3;
  const WORKING = new Set(["pending", "processing"]);
  const SPEAKER_NAMES = { user: "User", agent: "Agent" };
  const auth = window.voiceAuth;

  const byId = (id) => document.getElementById(id);
  const ui = {
    app: byId("app"),
    tabs: { talk: byId("tab-talk"), calls: byId("tab-calls") },
    talkView: byId("talk-view"),
    callsView: byId("calls-view"),
    error: byId("calls-error"),
    listView: byId("calls-list-view"),
    uploadPanel: byId("upload"),
    uploadFile: byId("upload-file"),
    uploadSending: byId("upload-sending"),
    uploadLabel: byId("upload-progress-label"),
    uploadProgress: byId("upload-progress"),
    uploadJobs: byId("upload-jobs"),
    stats: byId("calls-stats"),
    filter: byId("calls-filter"),
    filterLanguage: byId("filter-language"),
    knownTags: byId("known-tags"),
    count: byId("calls-count"),
    exportCsv: byId("export-csv"),
    exportJsonl: byId("export-jsonl"),
    list: byId("calls-list"),
    empty: byId("calls-empty"),
    more: byId("calls-more"),
    detail: byId("call-detail"),
    title: byId("call-title"),
    meta: byId("call-meta"),
    working: byId("call-working"),
    progress: byId("call-progress"),
    failure: byId("call-failure"),
    audio: byId("call-audio"),
    export: byId("call-export"),
    remove: byId("call-delete"),
    retry: byId("call-retry"),
    tagsForm: byId("tags-form"),
    tagsInput: byId("tags-input"),
    tagsSaved: byId("tags-saved"),
    aiTags: byId("ai-tags"),
    analysis: byId("call-analysis"),
    turns: byId("call-turns"),
    noTurns: byId("call-no-turns"),
  };

  const state = {
    calls: [], // the summaries listed, in order
    total: 0,
    listSeq: 0, // only the newest list request renders
    current: null, // the CallDetail shown, or null
    openSeq: 0,
    watched: new Map(), // id -> upload list item (or null): calls polled until they are done or failed
    pollTimer: null,
    uploads: Promise.resolve(), // files upload one after another
  };

  // --- Views and the address ------------------------------------------------------------------

  function parseRoute() {
    const parts = location.hash.replace(/^#\/?/, "").split("/");
    if (parts[0] !== "calls") return { view: "talk" };
    return { view: "calls", id: parts[1] ? decodeURIComponent(parts[1]) : null };
  }

  function route() {
    if (!auth.signedIn()) return;
    const { view, id } = parseRoute();
    ui.app.dataset.view = view;
    ui.talkView.hidden = view !== "talk";
    ui.callsView.hidden = view !== "calls";
    for (const [name, tab] of Object.entries(ui.tabs)) {
      if (name === view) tab.setAttribute("aria-current", "page");
      else tab.removeAttribute("aria-current");
    }
    clearError();
    if (view !== "calls" || !id) leaveCall();
    if (view !== "calls") return;
    ui.listView.hidden = Boolean(id);
    ui.detail.hidden = !id;
    if (id) openCall(id);
    else loadList();
  }

  function showList() {
    location.hash = "#/calls";
  }

  // --- The list ---------------------------------------------------------------------------------

  // The filter form as query parameters, leaving out what is empty.
  function filterParams() {
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(ui.filter)) {
      if (String(value).trim()) params.set(key, String(value).trim());
    }
    return params;
  }

  async function loadList({ append = false } = {}) {
    const params = filterParams();
    const seq = ++state.listSeq;
    const page = new URLSearchParams(params);
    page.set("limit", PAGE_SIZE);
    page.set("skip", append ? state.calls.length : 0);
    updateExportLinks(params);
    ui.list.setAttribute("aria-busy", "true");
    try {
      const [list, analytics] = await Promise.all([
        auth.api(`/api/calls?${page}`),
        append ? null : auth.api(`/api/calls/analytics?${params}`).catch(() => null),
      ]);
      if (seq !== state.listSeq) return;
      state.calls = append ? state.calls.concat(list.calls) : list.calls;
      state.total = list.total;
      renderList(append ? list.calls : state.calls, append);
      if (!append) renderStats(analytics);
    } catch (err) {
      if (seq === state.listSeq) showError(err.message);
    } finally {
      if (seq === state.listSeq) ui.list.removeAttribute("aria-busy");
    }
  }

  function renderList(calls, append) {
    const rows = calls.map(callRow);
    if (append) ui.list.append(...rows);
    else ui.list.replaceChildren(...rows);
    for (const call of calls) if (WORKING.has(call.status)) watch(call.id);
    const filtered = [...filterParams().keys()].length > 0;
    ui.empty.hidden = state.calls.length > 0;
    ui.empty.textContent = filtered
      ? "No call matches these filters."
      : "No calls yet. Upload a recording above, or talk to the agent: live calls are recorded here.";
    ui.count.textContent = state.total === 0 ? "" : `${state.calls.length} of ${plural(state.total, "call")}`;
    ui.more.hidden = state.calls.length >= state.total;
  }

  function callRow(call) {
    const row = document.createElement("tr");
    row.className = "call-row";
    row.dataset.id = call.id;
    const link = document.createElement("a");
    link.href = callHref(call.id);
    link.textContent = callName(call);
    row.append(
      cell(dateTime(call.started_at)),
      cell(call.source === "live" ? "Live" : "Upload"),
      cell(link),
      cell(formatDuration(call.duration_s)),
      cell(call.languages?.join(", ") || "—"),
      cell(statusBadge(call)),
      cell(tagList(call.tags)),
    );
    return row;
  }

  function cell(content) {
    const td = document.createElement("td");
    td.append(content);
    return td;
  }

  // A row in the list shows the latest status of a call that is being watched.
  function updateRow(call) {
    const row = ui.list.querySelector(`.call-row[data-id="${CSS.escape(call.id)}"]`);
    row?.querySelector(".call-status")?.replaceWith(statusBadge(call));
  }

  function updateExportLinks(params) {
    for (const [link, format] of [
      [ui.exportCsv, "csv"],
      [ui.exportJsonl, "jsonl"],
    ]) {
      const query = new URLSearchParams(params);
      query.set("format", format);
      link.href = auth.withToken(`/api/calls/export?${query}`);
    }
  }

  // The totals strip; a figure without data is left out, and the strip too when there are no calls.
  function renderStats(analytics) {
    const show = Boolean(analytics) && analytics.total_calls > 0;
    ui.stats.hidden = !show;
    if (!show) return;
    const tags = Object.entries(analytics.tag_distribution ?? {}).sort((a, b) => b[1] - a[1]);
    const voiceToVoice = analytics.median_voice_to_voice_s;
    setStat("total", String(analytics.total_calls));
    ui.stats.querySelector('[data-stat="total"] .stat-label').textContent = analytics.total_calls === 1 ? "call" : "calls";
    setStat("transcript", String(analytics.calls_with_transcript));
    setStat("voice-to-voice", typeof voiceToVoice === "number" ? `${Math.round(voiceToVoice * 1000)} ms` : "");
    setStat("tags", tags.slice(0, TOP_TAGS).map(([name, count]) => `${name} (${count})`).join(", "));
    ui.knownTags.replaceChildren(...tags.map(([name]) => new Option(name)));
  }

  function setStat(name, value) {
    const stat = ui.stats.querySelector(`[data-stat="${name}"]`);
    stat.querySelector(".stat-value").textContent = value;
    stat.hidden = !value;
  }

  ui.filter.addEventListener("submit", (event) => {
    event.preventDefault();
    clearError();
    loadList();
  });
  // "reset" fires before the form is cleared: list again once it is.
  ui.filter.addEventListener("reset", () => setTimeout(() => loadList(), 0));
  ui.more.addEventListener("click", () => loadList({ append: true }));

  // A click anywhere on a row opens the call; its name is the link for the keyboard and screen readers.
  ui.list.addEventListener("click", (event) => {
    const row = event.target.closest(".call-row");
    if (!row || event.target.closest("a") || getSelection().toString()) return;
    location.hash = callHref(row.dataset.id);
  });

  // --- Uploads ----------------------------------------------------------------------------------

  ui.uploadFile.addEventListener("change", () => {
    uploadAll([...ui.uploadFile.files]);
    ui.uploadFile.value = "";
  });

  ui.uploadPanel.addEventListener("dragover", (event) => {
    if (!event.dataTransfer?.types.includes("Files")) return;
    event.preventDefault();
    ui.uploadPanel.classList.add("dropping");
  });
  ui.uploadPanel.addEventListener("dragleave", () => ui.uploadPanel.classList.remove("dropping"));
  ui.uploadPanel.addEventListener("drop", (event) => {
    event.preventDefault();
    ui.uploadPanel.classList.remove("dropping");
    uploadAll([...(event.dataTransfer?.files ?? [])]);
  });

  function uploadAll(files) {
    for (const file of files) {
      state.uploads = state.uploads.then(() => uploadOne(file));
    }
  }

  // One file up, with the bytes sent on #upload-progress; then its records are watched until done.
  async function uploadOne(file) {
    const isZip = /\.zip$/i.test(file.name) || file.type === "application/zip";
    ui.uploadSending.hidden = false;
    ui.uploadLabel.textContent = `Uploading ${file.name}`;
    ui.uploadProgress.value = 0;
    clearError();
    try {
      const reply = await send(isZip ? "/api/calls/zip" : "/api/calls", file);
      const entries = reply.entries ?? reply.ids.map((id) => ({ name: file.name, id, error: null }));
      // Items are put first in the list: the archive's order stays by adding its last entry first.
      for (const entry of [...entries].reverse()) {
        if (entry.id) watch(entry.id, uploadItem(entry.name, entry.id));
        else uploadItem(entry.name, null, entry.error ?? "not accepted");
      }
      if (!ui.listView.hidden) loadList();
    } catch (err) {
      uploadItem(file.name, null, err.message);
    } finally {
      ui.uploadSending.hidden = true;
    }
  }

  // fetch() cannot report upload progress; XMLHttpRequest can.
  function send(path, file) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", path);
      for (const [name, value] of Object.entries(auth.headers())) xhr.setRequestHeader(name, value);
      xhr.responseType = "json";
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) ui.uploadProgress.value = event.loaded / event.total;
      });
      xhr.addEventListener("load", () => {
        const body = xhr.response;
        if (xhr.status >= 200 && xhr.status < 300 && body) {
          ui.uploadProgress.value = 1;
          resolve(body);
          return;
        }
        const message = body?.error ?? `The upload was refused (HTTP ${xhr.status}).`;
        if (xhr.status === 401) auth.expired(message);
        reject(new auth.ApiError(message, xhr.status, body?.detail ?? null));
      });
      xhr.addEventListener("error", () => reject(new auth.ApiError("The upload failed: cannot reach the server.", 0)));
      const form = new FormData();
      form.append("file", file, file.name);
      xhr.send(form);
    });
  }

  // One line under the upload: the file's name (a link once it has a record), its progress and status.
  function uploadItem(name, id, error = null) {
    const item = document.createElement("li");
    item.className = "upload-job";
    const label = document.createElement(id ? "a" : "span");
    label.className = "upload-name";
    label.textContent = name;
    if (id) {
      item.dataset.id = id;
      label.href = callHref(id);
    }
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = 0;
    bar.setAttribute("aria-label", `Transcribing ${name}`);
    bar.hidden = !id;
    const status = document.createElement("span");
    status.className = "call-status";
    status.dataset.status = id ? "pending" : "failed";
    status.textContent = id ? "pending" : `failed: ${error}`;
    item.append(label, bar, status);
    ui.uploadJobs.prepend(item);
    ui.uploadJobs.hidden = false;
    return item;
  }

  function updateUploadItem(item, call) {
    if (!item) return;
    const bar = item.querySelector("progress");
    bar.value = call.status === "done" ? 1 : (call.progress ?? 0);
    bar.hidden = !WORKING.has(call.status);
    item.querySelector(".call-status").replaceWith(statusBadge(call));
  }

  // --- Watching calls that are being transcribed ------------------------------------------------

  function watch(id, item = null) {
    if (state.watched.has(id) && !item) return;
    state.watched.set(id, item ?? state.watched.get(id) ?? null);
    if (state.pollTimer === null) state.pollTimer = setTimeout(poll, POLL_MS);
  }

  async function poll() {
    let finished = false;
    for (const [id, item] of [...state.watched]) {
      let call;
      try {
        call = await auth.api(`/api/calls/${encodeURIComponent(id)}`);
      } catch (err) {
        if (err.status === 404 || err.status === 401) state.watched.delete(id);
        continue; // a passing failure (503, network): try again at the next tick
      }
      updateUploadItem(item, call);
      updateRow(call);
      if (state.current?.id === id) renderCall(call);
      if (!WORKING.has(call.status)) {
        state.watched.delete(id);
        finished = true;
      }
    }
    // A finished call has its duration, languages and tags now: list again to show them.
    if (finished && !ui.callsView.hidden && !ui.listView.hidden) loadList();
    state.pollTimer = state.watched.size ? setTimeout(poll, POLL_MS) : null;
  }

  // --- One call ---------------------------------------------------------------------------------

  async function openCall(id) {
    const seq = ++state.openSeq;
    if (state.current?.id !== id) {
      leaveCall();
      ui.title.textContent = "Loading…";
    }
    try {
      const call = await auth.api(`/api/calls/${encodeURIComponent(id)}`);
      if (seq === state.openSeq && !ui.detail.hidden) renderCall(call);
    } catch (err) {
      if (seq === state.openSeq) {
        ui.title.textContent = "Call not found";
        showError(err.message);
      }
    }
  }

  // Stop the player and forget the call shown, so that another one starts clean.
  function leaveCall() {
    state.current = null;
    ui.audio.pause();
    ui.audio.removeAttribute("src");
    ui.audio.load();
    ui.audio.hidden = true;
    ui.meta.replaceChildren();
    ui.turns.replaceChildren();
    setTagsMessage("");
    ui.working.hidden = true;
    ui.failure.hidden = true;
    ui.retry.hidden = true;
    ui.analysis.hidden = true;
  }

  function renderCall(call) {
    const first = state.current?.id !== call.id;
    state.current = call;
    ui.title.textContent = callName(call);
    renderMeta(call);
    const working = WORKING.has(call.status);
    ui.working.hidden = !working;
    ui.progress.value = call.progress ?? 0;
    if (working) watch(call.id);
    ui.failure.hidden = call.status !== "failed";
    ui.failure.textContent = call.status === "failed" ? `Transcription failed: ${call.error ?? "unknown error"}` : "";
    ui.retry.hidden = call.status !== "failed" || call.source !== "upload";
    renderAudio(call);
    ui.export.href = auth.withToken(`/api/calls/${encodeURIComponent(call.id)}/export`);
    ui.export.download = `call-${call.id}.json`;
    renderTags(call, first);
    renderTurns(call);
    // The analysis (summary, topics...) is filled in by a later version; its section stays hidden until then.
    ui.analysis.hidden = true;
  }

  function renderMeta(call) {
    const rows = [
      ["Started", dateTime(call.started_at)],
      ["Source", call.source === "live" ? "Live call" : "Upload"],
      ["Duration", formatDuration(call.duration_s)],
      ["Languages", call.languages?.join(", ") || "—"],
      ["Status", statusBadge(call)],
      ["Turns", String(call.turns?.length ?? call.turn_count ?? 0)],
      ["Tags", call.tags?.length ? tagList(call.tags) : "—"],
    ];
    ui.meta.replaceChildren(
      ...rows.map(([term, value]) => {
        const group = document.createElement("div");
        const dt = document.createElement("dt");
        dt.textContent = term;
        const dd = document.createElement("dd");
        dd.append(value);
        group.append(dt, dd);
        return group;
      }),
    );
  }

  // The source is set once per call: setting it again would restart what is playing.
  function renderAudio(call) {
    ui.audio.hidden = !call.has_audio;
    ui.turns.classList.toggle("playable", Boolean(call.has_audio));
    if (!call.has_audio) return;
    const src = auth.withToken(`/api/calls/${encodeURIComponent(call.id)}/audio`);
    if (ui.audio.getAttribute("src") !== src) ui.audio.src = src;
  }

  function renderTags(call, resetInput) {
    // While the user is typing, a status update must not overwrite the input.
    if (resetInput || document.activeElement !== ui.tagsInput) ui.tagsInput.value = call.user_tags.join(", ");
    const suggested = call.ai_tags ?? [];
    ui.aiTags.hidden = suggested.length === 0;
    ui.aiTags.replaceChildren(ui.aiTags.firstElementChild);
    for (const name of suggested) {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "tag suggestion";
      chip.dataset.tag = name;
      chip.textContent = `+ ${name}`;
      chip.setAttribute("aria-label", `Add the suggested tag ${name}`);
      ui.aiTags.append(" ", chip);
    }
  }

  function renderTurns(call) {
    const turns = call.turns ?? [];
    ui.turns.replaceChildren(...turns.map(turnItem));
    ui.noTurns.hidden = turns.length > 0;
    ui.noTurns.textContent = WORKING.has(call.status)
      ? "The transcript will appear here once the recording is transcribed."
      : "Nothing was said in this call.";
  }

  function turnItem(turn) {
    const item = document.createElement("li");
    item.className = `turn turn-${turn.role === "assistant" ? "agent" : "user"}`;
    item.dataset.startMs = turn.start_ms;
    item.dataset.endMs = turn.end_ms;
    item.dataset.speaker = turn.speaker;
    if (turn.language) item.lang = turn.language;
    const time = document.createElement("button");
    time.type = "button";
    time.className = "turn-time";
    time.textContent = formatClock(turn.start_ms);
    time.setAttribute("aria-label", `Play from ${formatClock(turn.start_ms)}`);
    const speaker = document.createElement("span");
    speaker.className = "speaker";
    speaker.textContent = SPEAKER_NAMES[turn.speaker] ?? turn.speaker;
    if (turn.emotion && turn.emotion !== "neutral") speaker.dataset.emotion = turn.emotion;
    const text = document.createElement("p");
    text.className = "turn-text";
    text.append(...spokenParts(turn.text, turn.heard_text));
    if (typeof turn.heard_text === "string") item.classList.add("interrupted");
    item.append(time, speaker, text);
    return item;
  }

  // An interrupted reply: the words heard, then the rest that was written but never played, struck through
  // (as the Talk view shows it).
  function spokenParts(text, heardText) {
    if (typeof heardText !== "string") return [text];
    const heard = heardText.trim().split(/\s+/).filter(Boolean);
    const written = text.trim().split(/\s+/).filter(Boolean);
    const isPrefix = heard.every((word, i) => written[i] === word);
    if (!isPrefix) return [heardText];
    const unheard = written.slice(heard.length).join(" ");
    if (!unheard) return [heard.join(" ")];
    const struck = document.createElement("del");
    struck.className = "unheard";
    struck.title = "Not heard: the reply was interrupted";
    struck.textContent = unheard;
    return heard.length ? [heard.join(" "), " ", struck] : [struck];
  }

  // Clicking a turn plays the recording from where it starts.
  ui.turns.addEventListener("click", (event) => {
    const turn = event.target.closest(".turn");
    if (!turn || !state.current?.has_audio || getSelection().toString()) return;
    ui.audio.currentTime = Number(turn.dataset.startMs) / 1000;
    ui.audio.play().catch((err) => showError(`Cannot play the recording: ${err.message}`));
  });

  // The turn being heard is marked while the recording plays.
  ui.audio.addEventListener("timeupdate", () => {
    const ms = ui.audio.currentTime * 1000;
    for (const turn of ui.turns.children) {
      const current = Number(turn.dataset.startMs) <= ms && ms < Number(turn.dataset.endMs);
      turn.classList.toggle("current", current);
    }
  });

  ui.audio.addEventListener("error", () => {
    if (ui.audio.getAttribute("src")) showError("The recording cannot be played in this browser.");
  });

  ui.aiTags.addEventListener("click", (event) => {
    const chip = event.target.closest(".suggestion");
    if (!chip) return;
    const tags = parseTags(ui.tagsInput.value);
    if (!tags.includes(chip.dataset.tag)) tags.push(chip.dataset.tag);
    ui.tagsInput.value = tags.join(", ");
    ui.tagsInput.focus();
  });

  ui.tagsForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const call = state.current;
    if (!call) return;
    clearError();
    setTagsMessage("Saving…");
    try {
      const updated = await auth.api(`/api/calls/${encodeURIComponent(call.id)}/tags`, {
        method: "PUT",
        json: { tags: parseTags(ui.tagsInput.value) },
      });
      if (state.current?.id !== call.id) return;
      renderCall(updated);
      ui.tagsInput.value = updated.user_tags.join(", ");
      setTagsMessage(updated.user_tags.length ? "Tags saved." : "Your tags were removed.");
    } catch (err) {
      setTagsMessage("");
      showError(err.message);
    }
  });

  function setTagsMessage(message) {
    ui.tagsSaved.textContent = message;
    ui.tagsSaved.hidden = !message;
  }

  ui.remove.addEventListener("click", async () => {
    const call = state.current;
    if (!call) return;
    if (!confirm(`Delete "${callName(call)}"? Its transcript, tags and audio are removed for good.`)) return;
    clearError();
    try {
      await auth.api(`/api/calls/${encodeURIComponent(call.id)}`, { method: "DELETE" });
      state.watched.delete(call.id);
      showList();
    } catch (err) {
      showError(err.message);
    }
  });

  ui.retry.addEventListener("click", async () => {
    const call = state.current;
    if (!call) return;
    clearError();
    try {
      renderCall(await auth.api(`/api/calls/${encodeURIComponent(call.id)}/retry`, { method: "POST" }));
    } catch (err) {
      showError(err.message);
    }
  });

  // --- Small helpers --------------------------------------------------------------------------------

  function callHref(id) {
    return `#/calls/${encodeURIComponent(id)}`;
  }

  function callName(call) {
    return call.file_name || "Live call";
  }

  function parseTags(value) {
    return [...new Set(value.split(",").map((tag) => tag.trim()).filter(Boolean))];
  }

  function statusBadge(call) {
    const badge = document.createElement("span");
    badge.className = "call-status";
    badge.dataset.status = call.status;
    badge.textContent =
      call.status === "processing" ? `processing ${Math.round((call.progress ?? 0) * 100)}%` : call.status;
    if (call.status === "failed" && call.error) badge.title = call.error;
    return badge;
  }

  function tagList(tags) {
    const list = document.createElement("span");
    list.className = "tags";
    for (const name of tags ?? []) {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = name;
      list.append(tag, " ");
    }
    return list;
  }

  function dateTime(iso) {
    const time = document.createElement("time");
    time.dateTime = iso;
    const date = new Date(iso);
    time.textContent = Number.isNaN(date.getTime())
      ? iso
      : date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
    return time;
  }

  function formatDuration(seconds) {
    return typeof seconds === "number" ? formatClock(seconds * 1000) : "—";
  }

  // mm:ss, or h:mm:ss from an hour on.
  function formatClock(ms) {
    const total = Math.max(0, Math.floor(ms / 1000));
    const hours = Math.floor(total / 3600);
    const minutes = String(Math.floor((total % 3600) / 60)).padStart(2, "0");
    const seconds = String(total % 60).padStart(2, "0");
    return hours ? `${hours}:${minutes}:${seconds}` : `${minutes}:${seconds}`;
  }

  function plural(count, word) {
    return `${count} ${word}${count === 1 ? "" : "s"}`;
  }

  function showError(message) {
    ui.error.textContent = message;
    ui.error.hidden = false;
  }

  function clearError() {
    ui.error.textContent = "";
    ui.error.hidden = true;
  }

  async function fillLanguages() {
    const config = await auth.config;
    const names = Object.entries(config.languages ?? {}).sort((a, b) => a[1].localeCompare(b[1]));
    for (const [code, name] of names) ui.filterLanguage.add(new Option(`${name} (${code})`, code));
  }

  window.addEventListener("hashchange", route);
  // auth.js has decided by then whether a login comes first; later logins and logouts are heard here.
  auth.config.then(() => {
    auth.onChange((signedIn) => {
      if (signedIn) route();
      else leaveCall();
    });
    route();
  });
  fillLanguages();
})();
