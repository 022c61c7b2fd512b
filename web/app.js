"use strict";

// Browser side of the voice agent: one WebRTC call to the server (mic up, agent audio down)
// and a data channel "events" carrying the server's JSON events (agent/transport/events.py).
// The page reports what it measured of the agent's audio (playout.js) as agent.client.stats events.

const ICE_GATHERING_TIMEOUT_MS = 5000;
const STATES = new Set(["idle", "connecting", "listening", "thinking", "speaking"]);
const LATENCY_STAGES = [
  ["endpointing_s", "endpointing"],
  ["asr_s", "speech-to-text"],
  ["llm_first_token_s", "LLM first token"],
  ["llm_first_phrase_s", "first phrase"],
  ["tts_first_audio_s", "TTS first audio"],
];

const ui = {
  talk: document.getElementById("talk"),
  state: document.getElementById("state"),
  error: document.getElementById("error"),
  transcript: document.getElementById("transcript"),
  audio: document.getElementById("remote-audio"),
  language: document.getElementById("language"),
};

// The call in progress: {closed, pc, stream, channel, monitor, stats}, or null when idle.
let call = null;
// Agent transcript entries of the current call, by response_id:
// {message, text, latency, itemId, streamed, heard, mouthToEarS}.
const agentEntries = new Map();
// The user's lines by item_id: a turn the user went on with is recognised again and its line replaced.
const userLines = new Map();

ui.talk.addEventListener("click", () => (call ? endCall(call) : startCall()));
ui.language.addEventListener("change", () => sendLanguage(call));
fillLanguages();

// --- Language -------------------------------------------------------------------------------

async function fillLanguages() {
  const config = await loadConfig();
  const names = Object.entries(config.languages ?? {}).sort((a, b) => a[1].localeCompare(b[1]));
  for (const [code, name] of names) ui.language.add(new Option(`${name} (${code})`, code));
  ui.language.value = config.language ?? "auto";
  ui.language.dataset.configured = ui.language.value;
}

// The selector applies to the call in progress at once, and to a new call as soon as it connects.
function sendLanguage(current) {
  const language = ui.language.value;
  if (language !== "auto") ui.transcript.lang = language;
  if (current?.channel?.readyState !== "open") return;
  current.channel.send(JSON.stringify({ type: "session.update", session: { language } }));
}

// --- Call lifecycle -------------------------------------------------------------------------

async function startCall() {
  const current = { closed: false, pc: null, stream: null, channel: null, monitor: null, stats: null };
  call = current;
  current.monitor = startPlayoutMonitor(current);
  agentEntries.clear();
  userLines.clear();
  clearError();
  setTalkButton(true);
  setState("connecting");
  try {
    await connect(current);
  } catch (err) {
    const stoppedByUser = current.closed;
    endCall(current);
    if (!stoppedByUser) showError(describeError(err));
  }
}

async function connect(current) {
  const config = await loadConfig();
  if (config.language) ui.transcript.lang = config.language;

  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error("The microphone needs a secure page (https or localhost).");
  }
  current.stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  });
  ensureOpen(current);
  measureSafely(() => current.monitor?.listenToMicrophone(current.stream));

  const pc = new RTCPeerConnection({ iceServers: config.ice_servers ?? [] });
  current.pc = pc;
  current.stats = new WebRtcStatsReader(pc);
  // The channel must exist before the offer so that the SDP carries an application section.
  const channel = pc.createDataChannel("events");
  current.channel = channel;
  channel.addEventListener("message", (event) => handleMessage(current, event.data));
  channel.addEventListener("close", () => onChannelClosed(current));
  channel.addEventListener("open", () => {
    if (ui.language.value !== ui.language.dataset.configured) sendLanguage(current);
  });
  pc.addEventListener("track", (event) => playRemoteAudio(current, event));
  pc.addEventListener("connectionstatechange", () => onConnectionState(current));
  for (const track of current.stream.getAudioTracks()) pc.addTrack(track, current.stream);

  await pc.setLocalDescription(await pc.createOffer());
  await iceGatheringComplete(pc);
  ensureOpen(current);
  const answer = await postOffer(pc.localDescription);
  ensureOpen(current);
  await pc.setRemoteDescription(answer);
}

function endCall(current) {
  current.closed = true;
  current.monitor?.close();
  current.pc?.close();
  current.stream?.getTracks().forEach((track) => track.stop());
  if (call !== current) return;
  call = null;
  ui.audio.srcObject = null;
  for (const entry of agentEntries.values()) markFinal(entry);
  setTalkButton(false);
  setState("idle");
}

function ensureOpen(current) {
  if (current.closed) throw new Error("The call was stopped.");
}

function onConnectionState(current) {
  const state = current.pc.connectionState;
  if (state === "connected" && ui.state.dataset.state === "connecting") setState("listening");
  if (state === "failed" && call === current) {
    endCall(current);
    showError("The connection to the agent was lost.");
  }
}

function onChannelClosed(current) {
  if (current.closed || call !== current) return;
  endCall(current);
  showError("The agent closed the session.");
}

function playRemoteAudio(current, event) {
  const stream = event.streams[0] ?? new MediaStream([event.track]);
  ui.audio.srcObject = stream;
  measureSafely(() => current.monitor?.listenToReply(stream));
}

// --- Measuring what the user hears (playout.js) ----------------------------------------------

// Measurement must never break the call: without WebAudio the page just reports nothing.
function startPlayoutMonitor(current) {
  try {
    return new PlayoutMonitor((measured) => reportPlayout(current, measured));
  } catch (err) {
    console.warn("No mouth-to-ear measurement:", err);
    return null;
  }
}

function measureSafely(action) {
  try {
    action();
  } catch (err) {
    console.warn("Playout measurement failed:", err);
  }
}

// One agent.client.stats event per reply heard: its mouth-to-ear time and the WebRTC stats then.
async function reportPlayout(current, { responseId, mouthToEarS }) {
  const entry = agentEntries.get(responseId);
  if (entry && mouthToEarS !== null) entry.mouthToEarS = mouthToEarS;
  const stats = await current.stats?.read().catch(() => ({}));
  if (current.closed || current.channel?.readyState !== "open") return;
  const report = { type: "agent.client.stats", ...stats };
  if (responseId) report.response_id = responseId;
  if (mouthToEarS !== null) report.mouth_to_ear_s = mouthToEarS;
  current.channel.send(JSON.stringify(report));
}

// --- Signalling -----------------------------------------------------------------------------

async function loadConfig() {
  try {
    const response = await fetch("/config.json", { cache: "no-store" });
    return response.ok ? await response.json() : {};
  } catch {
    return {};
  }
}

// The server takes no trickled candidates, so the offer is sent once gathering has finished.
function iceGatheringComplete(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", onChange);
      resolve();
    };
    const onChange = () => {
      if (pc.iceGatheringState === "complete") finish();
    };
    // An unreachable STUN/TURN server can hold gathering open for long: send what we have by then.
    const timer = setTimeout(finish, ICE_GATHERING_TIMEOUT_MS);
    pc.addEventListener("icegatheringstatechange", onChange);
  });
}

async function postOffer(offer) {
  const response = await fetch("/offer", {
    method: "POST",
    // auth.js: the bearer token when accounts are on (auth_mode "token").
    headers: { "Content-Type": "application/json", ...window.voiceAuth?.headers() },
    body: JSON.stringify({ sdp: offer.sdp, type: offer.type }),
  }).catch(() => {
    throw new Error("Cannot reach the server.");
  });
  const body = await response.json().catch(() => null);
  if (response.status === 401) window.voiceAuth?.expired(body?.error);
  if (!response.ok) {
    throw new Error(body?.error ?? `The server refused the call (HTTP ${response.status}).`);
  }
  if (!body?.sdp) throw new Error("The server sent no answer.");
  return body;
}

// --- Server events --------------------------------------------------------------------------

const eventHandlers = {
  "agent.state": (event) => setState(event.state),
  "input_audio_buffer.speech_started": (event, current) => current.monitor?.speechStarted(),
  "input_audio_buffer.speech_stopped": (event, current) => current.monitor?.speechStopped(),
  "conversation.item.input_audio_transcription.completed": (event) => addUserLine(event),
  "agent.reply.dropped": (event) => dropAgentLine(event.response_id),
  "response.created": (event, current) => current.monitor?.responseCreated(event.response?.id),
  "response.audio_transcript.delta": (event) => appendAgentText(event),
  "conversation.item.truncated": (event) => truncateAgentLine(event),
  "response.audio_transcript.done": (event) => finishAgentLine(event.response_id, event.transcript),
  "response.done": (event, current) => {
    onResponseDone(event.response);
    current.monitor?.responseDone(event.response?.id);
  },
  "agent.turn.latency": (event) => showLatency(event),
  "session.updated": (event) => showLanguage(event.session),
  "agent.emotion": (event) => showEmotion(event),
  error: (event) => showError(event.error?.message ?? "The agent reported an error."),
};

function handleMessage(current, data) {
  if (call !== current) return;
  let event;
  try {
    event = JSON.parse(data);
  } catch {
    console.warn("Ignoring a data channel message that is not JSON:", data);
    return;
  }
  eventHandlers[event.type]?.(event, current);
}

// --- Transcript -----------------------------------------------------------------------------

// The server's answer to a language choice, or the language it recognised ("auto").
function showLanguage(session) {
  if (!session?.language) return;
  ui.transcript.lang = session.language;
  ui.transcript.dataset.language = session.language;
}

// A small tag on the bubble: the emotion read from its words, when there is one.
function showEmotion(event) {
  if (!event.emotion || event.emotion === "neutral") return;
  const message = event.speaker === "agent"
    ? agentEntries.get(event.response_id)?.message
    : [...ui.transcript.querySelectorAll(".from-user")].at(-1);
  if (!message) return;
  message.querySelector(".speaker").dataset.emotion = event.emotion;
  message.title = `${event.emotion}, intensity ${event.intensity}, confidence ${event.confidence}`;
}

function addUserLine(event) {
  const text = event.transcript?.trim();
  if (!text) return;
  let message = userLines.get(event.item_id);
  if (!message) {
    message = addMessage("user", "You");
    if (event.item_id) userLines.set(event.item_id, message);
  }
  message.querySelector(".user").textContent = text;
  scrollToEnd();
}

// A reply the user never heard, dropped because they went on speaking: it leaves no line.
function dropAgentLine(responseId) {
  agentEntries.get(responseId)?.message.remove();
  agentEntries.delete(responseId);
}

function appendAgentText(event) {
  const entry = agentEntry(event.response_id);
  entry.itemId ??= event.item_id;
  entry.streamed += event.delta ?? "";
  if (entry.heard === null) entry.text.textContent = entry.streamed;
  scrollToEnd();
}

// The user spoke over the reply: its bubble keeps the words that were heard and strikes through the
// rest, which was written but never played.
function truncateAgentLine(event) {
  const entry = [...agentEntries.values()].find((e) => e.itemId === event.item_id);
  if (!entry || typeof event.text !== "string") return;
  showHeard(entry, event.text);
  entry.message.classList.add("interrupted");
  scrollToEnd();
}

function showHeard(entry, heardText) {
  const heard = heardText.trim().split(/\s+/).filter(Boolean);
  const written = entry.streamed.trim().split(/\s+/).filter(Boolean);
  const isPrefix = heard.every((word, i) => written[i] === word);
  const unheard = isPrefix ? written.slice(heard.length).join(" ") : "";
  entry.heard = heard.join(" ");
  const parts = [entry.heard];
  if (unheard) {
    const struck = document.createElement("del");
    struck.className = "unheard";
    struck.title = "Not heard: the reply was interrupted";
    struck.textContent = unheard;
    parts.push(entry.heard ? " " : "", struck);
  }
  entry.text.replaceChildren(...parts);
}

// The final transcript is what the user heard: shorter than the deltas when the reply was interrupted.
function finishAgentLine(responseId, transcript) {
  const entry = agentEntry(responseId);
  if (typeof transcript === "string" && transcript.trim() !== entry.streamed.trim()) showHeard(entry, transcript);
  markFinal(entry);
}

function onResponseDone(response) {
  const entry = agentEntry(response.id);
  const completed = response.status === "completed";
  if (!entry.streamed && entry.heard === null && completed && response.output_text) {
    entry.text.textContent = response.output_text;
  }
  // Nothing was heard of this reply (interrupted before its first audio): it leaves no line.
  const heard = entry.heard ?? entry.text.textContent;
  if (!heard.trim()) {
    entry.message.remove();
    agentEntries.delete(response.id);
    return;
  }
  markFinal(entry);
  if (!completed) {
    const note = entry.message.querySelector(".note");
    note.textContent = response.status === "cancelled" ? "interrupted" : "failed";
    note.hidden = false;
    if (response.status === "cancelled") entry.message.classList.add("interrupted");
  }
}

// The server reports a turn's latency after its response.done, so the line exists unless it was dropped.
function showLatency(event) {
  const entry = agentEntries.get(event.response_id);
  if (!entry) return;
  const total = document.createElement("strong");
  const heard = typeof event.voice_to_voice_s === "number";
  total.textContent = heard ? `${formatMs(event.voice_to_voice_s)} voice to voice` : "no audio";
  const stages = LATENCY_STAGES.filter(([key]) => typeof event[key] === "number").map(([key, label]) =>
    latencyStage(label, event[key]),
  );
  if (typeof entry.mouthToEarS === "number") stages.unshift(latencyStage("mouth to ear", entry.mouthToEarS));
  // Spaces between the stages let a narrow line wrap between them, never inside one.
  entry.latency.replaceChildren(total, ...stages.flatMap((stage) => [" ", stage]));
  entry.latency.hidden = false;
  scrollToEnd();
}

function latencyStage(label, seconds) {
  const stage = document.createElement("span");
  stage.className = "stage";
  stage.textContent = `${label} ${formatMs(seconds)}`;
  return stage;
}

// aria-busy keeps screen readers from announcing a line token by token while it streams in.
function markFinal(entry) {
  entry.message.classList.add("final");
  entry.message.setAttribute("aria-busy", "false");
}

function agentEntry(responseId) {
  let entry = agentEntries.get(responseId);
  if (!entry) {
    const message = addMessage("agent", "Agent");
    message.setAttribute("aria-busy", "true");
    entry = {
      message,
      text: message.querySelector(".agent"),
      latency: message.querySelector(".latency"),
      itemId: null,
      streamed: "", // every word the server wrote, heard or not
      heard: null, // what was heard, once the reply was cut short
      mouthToEarS: null,
    };
    agentEntries.set(responseId, entry);
  }
  return entry;
}

// One message: speaker label, then the spoken text in a `.user` or `.agent` line; agent messages
// also hold a note (interrupted) and a `.latency` line, kept out of the text line.
function addMessage(role, speaker) {
  ui.transcript.querySelector(".empty")?.remove();
  const message = document.createElement("article");
  message.className = `message from-${role}`;
  const label = document.createElement("span");
  label.className = "speaker";
  label.textContent = speaker;
  const text = document.createElement("p");
  text.className = role;
  message.append(label, text);
  if (role === "agent") {
    label.append(" ", hiddenElement("span", "note"));
    message.append(hiddenElement("p", "latency"));
  }
  ui.transcript.append(message);
  return message;
}

function hiddenElement(tag, className) {
  const element = document.createElement(tag);
  element.className = className;
  element.hidden = true;
  return element;
}

function scrollToEnd() {
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

// --- Small UI helpers -----------------------------------------------------------------------

function setState(state) {
  if (!STATES.has(state)) return;
  ui.state.dataset.state = state;
  ui.state.textContent = state;
}

function setTalkButton(active) {
  ui.talk.textContent = active ? "Stop" : "Talk";
  ui.talk.classList.toggle("active", active);
}

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = false;
}

function clearError() {
  ui.error.textContent = "";
  ui.error.hidden = true;
}

function describeError(err) {
  if (err?.name === "NotAllowedError") return "Microphone access was denied. Allow it and press Talk again.";
  if (err?.name === "NotFoundError") return "No microphone was found.";
  return err?.message || String(err);
}

function formatMs(seconds) {
  return `${Math.round(seconds * 1000)} ms`;
}
