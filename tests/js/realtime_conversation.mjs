#!/usr/bin/env node
// A spoken conversation with our /v1/realtime WebSocket, driven by a client we did not write:
// OpenAI's Agents SDK for JavaScript (@openai/agents, RealtimeSession + WebSocket transport).
//
//   node realtime_conversation.mjs --url ws://127.0.0.1:PORT/v1/realtime \
//        --question1 q1.pcm --question2 q2.pcm --story story.pcm --interrupt int.pcm --out result.json
//
// Every .pcm is raw PCM16 mono 24 kHz little-endian. The script acts like a person at a microphone:
// audio goes out through session.sendAudio() in 20 ms chunks paced at real time (silence between
// utterances, the way a live microphone keeps sending), and the replies are "played" on a virtual
// speaker (we wait for the reply audio's duration before speaking again, as a person would).
//
// Turns:  1 question1 -> reply   2 question2 (follow-up) -> reply
//         3 story request -> once >= --interrupt-after-ms of reply audio arrived, the interruption
//           is spoken over it (barge-in)   4 the reply to the interruption.
//
// --out gets a JSON report; each turn's reply audio (PCM16 24 kHz) is saved next to it as
// reply1.pcm .. reply4.pcm. The report is written on failure too (with "ok": false, "failure").
//
// Exit status: 0 the conversation ran to the end and the SDK saw it whole; 1 bad arguments or
// input files; 2 could not connect / no session; 3 timeout, the server closed the socket, or the
// SDK threw; 4 the conversation ran but with "problems" (listed in the report: error events,
// server events the SDK's schema rejected, a turn whose audio or transcript never reached the SDK,
// a barge-in that neither cancelled nor truncated the reply). Whether the replies make sense is
// for the caller to judge from the transcripts and the saved audio.
//
// The token is VOICE_AGENT_TOKEN (or "none"); in Node the SDK sends it as
// "Authorization: Bearer <token>".

import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { RealtimeAgent, RealtimeSession } from '@openai/agents/realtime';

const RATE = 24000;
const CHUNK_MS = 20;
const CHUNK_BYTES = (RATE * 2 * CHUNK_MS) / 1000; // 960
const SILENCE = Buffer.alloc(CHUNK_BYTES);

// Server events the SDK validates with zod (realtimeServerEventSchema in
// @openai/agents-realtime/dist/openaiRealtimeEvents.mjs). A known type that fails validation is
// demoted to a "generic" event: it still shows up in transport_event but the SDK ignores it.
const SDK_VALIDATED_TYPES = [
  'conversation.created', 'conversation.item.added', 'conversation.item.done',
  'conversation.item.deleted', 'conversation.item.input_audio_transcription.completed',
  'conversation.item.input_audio_transcription.delta', 'conversation.item.input_audio_transcription.failed',
  'conversation.item.retrieved', 'conversation.item.truncated', 'input_audio_buffer.cleared',
  'input_audio_buffer.committed', 'input_audio_buffer.speech_started', 'input_audio_buffer.speech_stopped',
  'output_audio_buffer.started', 'output_audio_buffer.stopped', 'output_audio_buffer.cleared',
  'rate_limits.updated', 'response.output_audio.delta', 'response.output_audio.done',
  'response.output_audio_transcript.delta', 'response.output_audio_transcript.done',
  'response.content_part.added', 'response.content_part.done', 'response.created', 'response.done',
  'response.function_call_arguments.delta', 'response.function_call_arguments.done',
  'response.output_item.added', 'response.output_item.done', 'response.output_text.delta',
  'response.output_text.done', 'session.created', 'session.updated',
];

// ---------------------------------------------------------------------------------------------
// arguments

const USAGE = `usage: node realtime_conversation.mjs --url ws://HOST:PORT/v1/realtime \\
    --question1 q1.pcm --question2 q2.pcm --story story.pcm --interrupt int.pcm --out result.json
  [--trailing-silence-ms 1500] [--interrupt-after-ms 1000] [--timeout-s 240] [--turn-timeout-s 90]
  [--settle-ms 1500] [--mic continuous|bursts] [--instructions TEXT] [--model NAME] [--verbose]`;

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      url: { type: 'string' },
      question1: { type: 'string' },
      question2: { type: 'string' },
      story: { type: 'string' },
      interrupt: { type: 'string' },
      out: { type: 'string' },
      'trailing-silence-ms': { type: 'string', default: '1500' },
      'interrupt-after-ms': { type: 'string', default: '1000' },
      'timeout-s': { type: 'string', default: '240' },
      'turn-timeout-s': { type: 'string', default: '90' },
      'settle-ms': { type: 'string', default: '1500' },
      mic: { type: 'string', default: 'continuous' },
      instructions: { type: 'string' },
      model: { type: 'string' },
      verbose: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  }));
} catch (error) {
  console.error(`realtime_conversation: ${error.message}\n${USAGE}`);
  process.exit(1);
}
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
const missing = ['url', 'question1', 'question2', 'story', 'interrupt', 'out'].filter((k) => !args[k]);
if (missing.length) {
  console.error(`realtime_conversation: missing --${missing.join(', --')}\n${USAGE}`);
  process.exit(1);
}
if (!['continuous', 'bursts'].includes(args.mic)) {
  console.error(`realtime_conversation: --mic must be continuous or bursts\n${USAGE}`);
  process.exit(1);
}
const num = (name) => {
  const v = Number(args[name]);
  if (!Number.isFinite(v) || v < 0) {
    console.error(`realtime_conversation: --${name} must be a non-negative number`);
    process.exit(1);
  }
  return v;
};
const TRAILING_SILENCE_MS = num('trailing-silence-ms');
const INTERRUPT_AFTER_MS = num('interrupt-after-ms');
const TIMEOUT_MS = num('timeout-s') * 1000;
const TURN_TIMEOUT_MS = num('turn-timeout-s') * 1000;
const SETTLE_MS = num('settle-ms');
const OUT = path.resolve(args.out);
const OUT_DIR = path.dirname(OUT);

function readPcm(name) {
  const file = path.resolve(args[name]);
  let data;
  try {
    data = fs.readFileSync(file);
  } catch (error) {
    console.error(`realtime_conversation: cannot read --${name} ${file}: ${error.message}`);
    process.exit(1);
  }
  if (data.length < CHUNK_BYTES || data.length % 2 !== 0) {
    console.error(`realtime_conversation: --${name} ${file} is not PCM16 audio (${data.length} bytes)`);
    process.exit(1);
  }
  return data;
}
const AUDIO = {
  question1: readPcm('question1'),
  question2: readPcm('question2'),
  story: readPcm('story'),
  interrupt: readPcm('interrupt'),
};
try {
  fs.mkdirSync(OUT_DIR, { recursive: true });
} catch (error) {
  console.error(`realtime_conversation: cannot create ${OUT_DIR}: ${error.message}`);
  process.exit(1);
}

// ---------------------------------------------------------------------------------------------
// bookkeeping

const T0 = performance.now();
const now = () => Math.round(performance.now() - T0); // ms since start
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
const log = (...parts) => console.error(`[${(now() / 1000).toFixed(2)}s]`, ...parts);
const debug = (...parts) => args.verbose && log(...parts);

const report = {
  ok: false,
  failure: null,
  url: args.url,
  sdk: { package: '@openai/agents', version: null },
  mic: args.mic,
  turns: [],
  events: [], // server event types, in the order first seen
  event_counts: {},
  sdk_rejected_events: {}, // known type -> how many failed the SDK's zod validation (ignored by it)
  sdk_rejected_examples: {},
  client_events: [], // what the SDK sent, in order (audio appends counted, not listed)
  client_event_counts: {},
  sdk_events: {}, // RealtimeSession events and how often they fired
  user_transcripts: [],
  speech_events: [],
  history: [],
  timeline: [],
  errors: [],
  close: null,
};
try {
  const pkg = JSON.parse(fs.readFileSync(new URL('./node_modules/@openai/agents/package.json', import.meta.url)));
  report.sdk.version = pkg.version;
} catch {
  // not fatal: installed elsewhere on the module path
}

const responses = new Map(); // response id -> record
const responseOrder = [];
const validatedCounts = {};
let failure = null; // first fatal problem; every wait gives up when it is set
let closing = false;
let everConnected = false;
let lastRawEvent = null; // the server event being handled (for exceptions thrown by the SDK)
let validatedThisMessage = false;

// Events as data for the report: long strings (base64 audio) cut short.
function shorten(value, depth = 0) {
  if (typeof value === 'string') return value.length > 80 ? `${value.slice(0, 40)}...<${value.length} chars>` : value;
  if (depth > 6 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.slice(0, 20).map((v) => shorten(v, depth + 1));
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, shorten(v, depth + 1)]));
}
let lastDoneResponseId = null;

function responseRecord(id) {
  let r = responses.get(id);
  if (!r) {
    r = {
      id,
      created_at_ms: null,
      done_at_ms: null,
      status: null,
      status_details: null,
      item_ids: [],
      transcript_deltas: '',
      transcript_done: null,
      agent_end_text: null,
      audio: [],
      audio_bytes: 0,
      raw_audio_bytes: 0,
      first_audio_at_ms: null,
      last_audio_at_ms: null,
      audio_times: [], // [t_ms, bytes so far] per SDK 'audio' event
    };
    responses.set(id, r);
    responseOrder.push(id);
  }
  return r;
}

function addTimeline(entry) {
  const last = report.timeline[report.timeline.length - 1];
  if (last && last.dir === entry.dir && last.type === entry.type && entry.collapse) {
    last.count += 1;
    last.last_ms = entry.t_ms;
    return;
  }
  const { collapse, ...rest } = entry;
  report.timeline.push(collapse ? { ...rest, count: 1 } : rest);
}

function describeError(error) {
  if (error === null || error === undefined) return String(error);
  if (error instanceof Error) return { name: error.name, message: error.message };
  if (typeof error === 'object') {
    // ws ErrorEvent (connection problems) carries .message and .error
    if (error.constructor?.name === 'ErrorEvent' || (error.type === 'error' && 'message' in error && !('event_id' in error))) {
      return { name: 'ErrorEvent', message: error.message ?? error.error?.message ?? String(error.error) };
    }
    try {
      return JSON.parse(JSON.stringify(error));
    } catch {
      return String(error);
    }
  }
  return String(error);
}

function errorText(error) {
  const d = describeError(error);
  if (typeof d === 'string') return d;
  return d.message ?? d.error?.message ?? d.error?.error?.message ?? JSON.stringify(d);
}

function fail(message) {
  if (!failure) {
    failure = new Error(message);
    log(`FAILURE: ${message}`);
  }
}

async function waitFor(predicate, timeoutMs, what) {
  const deadline = now() + timeoutMs;
  while (true) {
    if (failure) throw failure;
    if (predicate()) return;
    if (now() > deadline) {
      fail(`timed out after ${(timeoutMs / 1000).toFixed(0)} s waiting for ${what}`);
      throw failure;
    }
    await sleep(10);
  }
}

// ---------------------------------------------------------------------------------------------
// the SDK session

const agent = new RealtimeAgent({
  name: 'Voice agent test client',
  ...(args.instructions ? { instructions: args.instructions } : {}),
});
const session = new RealtimeSession(agent, {
  transport: 'websocket',
  ...(args.model ? { model: args.model } : {}),
});
const transport = session.transport;

const countSdk = (name) => {
  report.sdk_events[name] = (report.sdk_events[name] ?? 0) + 1;
};

// Raw server events (every JSON message with a "type"), validated or not.
session.on('transport_event', (event) => {
  const type = typeof event?.type === 'string' ? event.type : '<no type>';
  if (!(type in report.event_counts)) {
    report.events.push(type);
    report.event_counts[type] = 0;
    if (SDK_VALIDATED_TYPES.includes(type) && !(type in validatedCounts)) {
      // The base transport emits '*' (raw) and then, synchronously, the validated event under its
      // own type; listening now still catches this very message.
      validatedCounts[type] = 0;
      transport.on(type, () => {
        validatedCounts[type] += 1;
        validatedThisMessage = true;
      });
    }
  }
  report.event_counts[type] += 1;
  lastRawEvent = { type, event };
  if (type in validatedCounts) {
    // the SDK validates synchronously right after this handler; look once it is done
    validatedThisMessage = false;
    queueMicrotask(() => {
      if (!validatedThisMessage && !(type in report.sdk_rejected_examples)) {
        report.sdk_rejected_examples[type] = shorten(event);
        log(`the SDK's schema rejected a ${type} event (it ignores it): ${JSON.stringify(shorten(event)).slice(0, 400)}`);
      }
    });
  }
  const t = now();
  const entry = { t_ms: t, dir: 'in', type };
  if (type === 'response.output_audio.delta' || type.endsWith('transcript.delta') || type === 'response.output_text.delta') {
    entry.collapse = true;
  }
  if (event.response_id) entry.response_id = event.response_id;
  if (event.item_id) entry.item_id = event.item_id;
  if (event.response?.id) entry.response_id = event.response.id;
  if (event.response?.status) entry.status = event.response.status;
  if (event.item?.id) entry.item_id = event.item.id;
  if (type === 'error') entry.error = event.error;
  addTimeline(entry);
  debug('<-', type, entry.response_id ?? entry.item_id ?? '');

  switch (type) {
    case 'response.created': {
      const r = responseRecord(event.response?.id ?? `<no id ${responseOrder.length}>`);
      r.created_at_ms = t;
      r.status = event.response?.status ?? 'in_progress';
      break;
    }
    case 'response.output_audio.delta': {
      if (event.response_id && typeof event.delta === 'string') {
        responseRecord(event.response_id).raw_audio_bytes += Buffer.from(event.delta, 'base64').length;
      }
      break;
    }
    case 'response.output_audio_transcript.done': {
      if (event.response_id) responseRecord(event.response_id).transcript_done = event.transcript ?? null;
      break;
    }
    case 'response.output_item.added':
    case 'conversation.item.added': {
      const rid = event.response_id;
      if (rid && event.item?.id) {
        const r = responseRecord(rid);
        if (!r.item_ids.includes(event.item.id)) r.item_ids.push(event.item.id);
      }
      break;
    }
    case 'response.done': {
      const rid = event.response?.id ?? responseOrder[responseOrder.length - 1];
      if (rid) {
        lastDoneResponseId = rid;
        const r = responseRecord(rid);
        r.done_at_ms = t;
        r.status = event.response?.status ?? null;
        r.status_details = event.response?.status_details ?? null;
        for (const item of event.response?.output ?? []) {
          if (item?.id && !r.item_ids.includes(item.id)) r.item_ids.push(item.id);
        }
      }
      break;
    }
    case 'conversation.item.input_audio_transcription.completed':
      report.user_transcripts.push({ t_ms: t, item_id: event.item_id ?? null, transcript: event.transcript ?? null });
      log(`user said: ${JSON.stringify(event.transcript)}`);
      break;
    case 'input_audio_buffer.speech_started':
    case 'input_audio_buffer.speech_stopped':
    case 'input_audio_buffer.committed':
    case 'conversation.item.truncated':
      report.speech_events.push({
        t_ms: t,
        type,
        item_id: event.item_id ?? null,
        audio_start_ms: event.audio_start_ms,
        audio_end_ms: event.audio_end_ms,
        mic_ms: mic.sentMs,
      });
      break;
    case 'error':
      report.errors.push({ t_ms: t, kind: 'server_error_event', error: event.error ?? event });
      log(`server error event: ${JSON.stringify(event.error ?? event)}`);
      break;
    default:
      break;
  }
});

// SDK-level events: what an application built on the SDK would see.
session.on('audio', (event) => {
  countSdk('audio');
  const r = responseRecord(event.responseId ?? '<no response id>');
  const chunk = Buffer.from(event.data);
  r.audio.push(chunk);
  r.audio_bytes += chunk.length;
  const t = now();
  if (r.first_audio_at_ms === null) r.first_audio_at_ms = t;
  r.last_audio_at_ms = t;
  r.audio_times.push([t, r.audio_bytes]);
});
for (const name of ['audio_start', 'audio_stopped', 'agent_start', 'history_updated', 'history_added',
  'agent_handoff', 'agent_tool_start', 'agent_tool_end', 'tool_approval_requested', 'guardrail_tripped']) {
  session.on(name, () => countSdk(name));
}
const audioInterruptedAt = [];
session.on('audio_interrupted', () => {
  countSdk('audio_interrupted');
  audioInterruptedAt.push(now());
  addTimeline({ t_ms: now(), dir: 'sdk', type: 'audio_interrupted' });
  debug('sdk audio_interrupted');
});
session.on('agent_end', (_context, _agent, text) => {
  countSdk('agent_end');
  // agent_end follows response.done; the transcript comes from response.done's output items.
  const last = lastDoneResponseId ? responses.get(lastDoneResponseId) : null;
  if (last && last.agent_end_text === null) last.agent_end_text = text ?? '';
});
transport.on('audio_transcript_delta', (event) => {
  // validated response.output_audio_transcript.delta
  if (event.responseId) responseRecord(event.responseId).transcript_deltas += event.delta ?? '';
});
session.on('error', (event) => {
  countSdk('error');
  const inner = event?.error;
  // Server "error" events (plain objects from the SDK's parser) are already recorded from
  // transport_event; everything else (socket errors, SDK exceptions) is recorded here.
  if (inner && Object.getPrototypeOf(inner) === Object.prototype && inner.type === 'error') return;
  report.errors.push({ t_ms: now(), kind: 'sdk_error', error: describeError(inner ?? event) });
  log(`SDK error: ${errorText(inner ?? event)}`);
});

// What the SDK sends: wrap the socket's send() as soon as the transport has created it
// ('connecting' comes before the socket opens, so nothing is missed). Observation only.
let socket = null;
transport.on('connection_change', (status) => {
  addTimeline({ t_ms: now(), dir: 'sdk', type: `connection_change:${status}` });
  debug('connection', status);
  if (status === 'connecting' && transport.connectionState?.websocket) {
    socket = transport.connectionState.websocket;
    const send = socket.send.bind(socket);
    socket.send = (data, ...rest) => {
      try {
        const event = JSON.parse(String(data));
        report.client_event_counts[event.type] = (report.client_event_counts[event.type] ?? 0) + 1;
        if (event.type !== 'input_audio_buffer.append') {
          report.client_events.push({ t_ms: now(), ...event });
          addTimeline({ t_ms: now(), dir: 'out', type: event.type, ...(event.item_id ? { item_id: event.item_id } : {}) });
          debug('->', event.type, event.type === 'conversation.item.truncate' ? JSON.stringify(event) : '');
        }
      } catch {
        // not JSON: leave it alone
      }
      return send(data, ...rest);
    };
    // (no 'unexpected-response' listener: with one, ws stops turning an HTTP refusal into an error)
    if (typeof socket.on === 'function') {
      socket.on('close', (code, reason) => {
        report.close = { t_ms: now(), code, reason: String(reason ?? '') };
      });
    }
  }
  if (status === 'connected') everConnected = true;
  if (status === 'disconnected' && !closing && everConnected) {
    // 'disconnected' comes before the socket's own 'close' event: give that a moment for the code
    setTimeout(() => {
      const how = report.close ? ` (close code ${report.close.code}${report.close.reason ? `, reason ${JSON.stringify(report.close.reason)}` : ''})` : '';
      fail(`the server closed the WebSocket${how}`);
    }, 50);
  }
});

function summarizeException(error) {
  if (error?.name === 'ZodError' && Array.isArray(error.issues)) {
    const flat = [];
    const walk = (issues, prefix) => {
      for (const issue of issues) {
        const where = [...prefix, ...(issue.path ?? [])].join('.');
        if (issue.code === 'invalid_union' && Array.isArray(issue.errors)) {
          issue.errors.forEach((branch, i) => walk(branch, [...prefix, ...(issue.path ?? []), `<alt ${i}>`]));
        } else flat.push(`${where}: ${issue.message}`);
      }
    };
    walk(error.issues, []);
    return `ZodError (${flat.join('; ')})`;
  }
  return error?.message ?? String(error);
}

process.on('uncaughtException', (error) => {
  // e.g. the SDK's zod .parse() of a conversation item, thrown inside the socket's message handler:
  // an application without this handler would crash.
  const fromSdk = /node_modules[\\/](@openai|zod)[\\/]/.test(String(error?.stack ?? ''));
  const during = lastRawEvent ? ` (last server event: ${lastRawEvent.type})` : '';
  report.errors.push({
    t_ms: now(),
    kind: 'uncaught_exception',
    error: describeError(error),
    summary: summarizeException(error),
    server_event: lastRawEvent ? shorten(lastRawEvent.event) : null,
    stack: error?.stack,
  });
  fail(`${fromSdk ? 'the SDK threw' : 'uncaught exception'}${during}: ${summarizeException(error)}`);
});
process.on('unhandledRejection', (error) => {
  report.errors.push({ t_ms: now(), kind: 'unhandled_rejection', error: describeError(error) });
  fail(`unhandled rejection: ${errorText(error)}`);
});

// ---------------------------------------------------------------------------------------------
// the microphone: one paced 20 ms chunk at a time, speech when queued, silence otherwise

const mic = {
  queue: [], // { chunk, done? }
  sentMs: 0, // position on the input audio timeline (what the server's audio_start_ms counts)
  running: false,
};

async function micLoop() {
  mic.running = true;
  let start = performance.now();
  let k = 0;
  while (mic.running && !failure) {
    let next = mic.queue.shift();
    while (next && next.chunk === null) {
      // an end-of-utterance marker: no audio of its own
      next.done?.();
      next = mic.queue.shift();
    }
    const chunk = next ? next.chunk : args.mic === 'continuous' ? SILENCE : null;
    if (chunk) {
      session.sendAudio(chunk.buffer.slice(chunk.byteOffset, chunk.byteOffset + chunk.byteLength));
      mic.sentMs += (chunk.length / 2 / RATE) * 1000;
    }
    if (next?.done) next.done();
    k += 1;
    let target = start + k * CHUNK_MS;
    const behind = performance.now() - target;
    if (behind > 200) {
      // the event loop stalled: don't burst to catch up, carry on at real time from here
      start = performance.now() - k * CHUNK_MS;
      target = start + k * CHUNK_MS;
    }
    await sleep(target - performance.now());
  }
  mic.running = false;
}

function chunks(pcm) {
  const out = [];
  for (let off = 0; off < pcm.length; off += CHUNK_BYTES) {
    const piece = pcm.subarray(off, Math.min(off + CHUNK_BYTES, pcm.length));
    out.push(piece.length === CHUNK_BYTES ? piece : Buffer.concat([piece, Buffer.alloc(CHUNK_BYTES - piece.length)]));
  }
  return out;
}

// Queue an utterance plus trailing silence; resolves { speechStart, speechEnd, end } (ms since
// start) once the last chunk of each part went out.
async function speak(pcm) {
  const sending = queueUtterance(pcm);
  const expected = audioMs(pcm.length) + TRAILING_SILENCE_MS;
  await waitFor(() => sending.marks.end !== null, expected + 30000, 'the microphone to send the utterance');
  return sending.marks;
}

function queueUtterance(pcm) {
  const speechChunks = chunks(pcm);
  const silenceChunks = Math.round(TRAILING_SILENCE_MS / CHUNK_MS);
  const marks = { speechStart: null, speechEnd: null, end: null, micStartMs: null };
  const promise = new Promise((resolve) => {
    speechChunks.forEach((chunk, i) => {
      mic.queue.push({
        chunk,
        done: () => {
          if (i === 0) {
            marks.speechStart = now();
            marks.micStartMs = mic.sentMs - CHUNK_MS;
          }
          if (i === speechChunks.length - 1) marks.speechEnd = now();
        },
      });
    });
    for (let i = 0; i < silenceChunks; i += 1) mic.queue.push({ chunk: SILENCE });
    mic.queue.push({
      chunk: null,
      done: () => {
        marks.end = now();
        resolve(marks);
      },
    });
  });
  return { marks, promise };
}

// ---------------------------------------------------------------------------------------------
// turns

const responsesFrom = (index) => responseOrder.slice(index).map((id) => responses.get(id)).filter((r) => r.created_at_ms !== null);
const audioMs = (bytes) => (bytes / 2 / RATE) * 1000;
const transcriptOf = (r) => r.transcript_done ?? (r.transcript_deltas || r.agent_end_text || '');

// The reply to a turn: every response created since `index`, all done, and no new one for SETTLE_MS.
async function waitForReplies(index, what) {
  await waitFor(() => responsesFrom(index).length > 0, TURN_TIMEOUT_MS, `response.created for ${what}`);
  await waitFor(() => {
    const rs = responsesFrom(index);
    if (rs.some((r) => r.done_at_ms === null)) return false;
    return now() - Math.max(...rs.map((r) => r.done_at_ms)) >= SETTLE_MS;
  }, TURN_TIMEOUT_MS, `response.done for ${what}`);
  return responsesFrom(index);
}

// Let the virtual speaker finish the reply before the person speaks again.
async function waitForPlayback(rs) {
  const ends = rs.filter((r) => r.first_audio_at_ms !== null).map((r) => r.first_audio_at_ms + audioMs(r.audio_bytes));
  if (ends.length) await sleep(Math.max(...ends) - now() + 300);
}

function turnRecord(number, name, rs, marks, extra = {}) {
  const audio = Buffer.concat(rs.flatMap((r) => r.audio));
  const file = path.join(OUT_DIR, `reply${number}.pcm`);
  fs.writeFileSync(file, audio);
  const last = rs[rs.length - 1];
  const firstAudio = rs.map((r) => r.first_audio_at_ms).filter((t) => t !== null)[0] ?? null;
  const turn = {
    name,
    transcript: rs.map(transcriptOf).filter(Boolean).join(' ').trim(),
    audio_path: file,
    audio_samples: audio.length / 2,
    audio_ms: Math.round(audioMs(audio.length)),
    status: last?.status ?? null,
    response_ids: rs.map((r) => r.id),
    responses: rs.map((r) => ({
      id: r.id,
      status: r.status,
      status_details: r.status_details,
      item_ids: r.item_ids,
      transcript: transcriptOf(r),
      transcript_deltas: r.transcript_deltas,
      transcript_done: r.transcript_done,
      agent_end_text: r.agent_end_text,
      audio_samples: r.audio_bytes / 2,
      raw_audio_samples: r.raw_audio_bytes / 2,
      created_at_ms: r.created_at_ms,
      first_audio_at_ms: r.first_audio_at_ms,
      done_at_ms: r.done_at_ms,
    })),
    speech_start_ms: marks?.speechStart ?? null,
    speech_end_ms: marks?.speechEnd ?? null,
    mic_start_ms: marks?.micStartMs ?? null,
    first_audio_latency_ms: firstAudio !== null && marks?.speechEnd != null ? firstAudio - marks.speechEnd : null,
    ...extra,
  };
  report.turns.push(turn);
  log(`turn ${number} (${name}): status=${turn.status} audio=${turn.audio_ms} ms responses=${rs.length} transcript=${JSON.stringify(turn.transcript)}`);
  return turn;
}

async function questionTurn(number, name, pcm) {
  const index = responseOrder.length;
  log(`turn ${number}: speaking ${name} (${Math.round(audioMs(pcm.length))} ms)`);
  const marks = await speak(pcm);
  if (failure) throw failure;
  const rs = await waitForReplies(index, `the reply to ${name}`);
  await waitForPlayback(rs);
  return turnRecord(number, name, rs, marks);
}

async function interruptionTurns() {
  const storyIndex = responseOrder.length;
  log(`turn 3: speaking story request (${Math.round(audioMs(AUDIO.story.length))} ms)`);
  // Listen for the reply as soon as the request has been said: the trailing silence still queued
  // is dropped when we barge in, as a person would start talking over the reply.
  const storySending = queueUtterance(AUDIO.story);
  const storyMarks = storySending.marks;
  await waitFor(() => storyMarks.speechEnd !== null, audioMs(AUDIO.story.length) + 30000, 'the microphone to send the story request');
  let story = null;
  await waitFor(() => {
    story = responsesFrom(storyIndex).find((r) => audioMs(r.audio_bytes) >= INTERRUPT_AFTER_MS) ?? null;
    if (story) return true;
    // the story came and went with less audio than we wanted to wait for
    const rs = responsesFrom(storyIndex);
    if (rs.length && rs.every((r) => r.done_at_ms !== null) && now() - Math.max(...rs.map((r) => r.done_at_ms)) > SETTLE_MS) {
      story = rs.filter((r) => r.audio_bytes > 0).pop() ?? rs[rs.length - 1];
      return true;
    }
    return false;
  }, TURN_TIMEOUT_MS, `${INTERRUPT_AFTER_MS} ms of story reply audio`);
  const atInterrupt = {
    t_ms: now(),
    story_audio_ms_received: Math.round(audioMs(story.audio_bytes)),
    story_audio_ms_played: story.first_audio_at_ms === null ? 0 : Math.min(now() - story.first_audio_at_ms, Math.round(audioMs(story.audio_bytes))),
    story_done_before_interrupt: story.done_at_ms !== null,
    story_status_before_interrupt: story.status,
  };
  log(`turn 4: barging in after ${atInterrupt.story_audio_ms_received} ms of story audio (${Math.round(audioMs(AUDIO.interrupt.length))} ms)`);
  mic.queue = mic.queue.filter((item) => item.chunk !== SILENCE);
  const interruptIndex = responseOrder.length;
  const interruptedBefore = audioInterruptedAt.length;
  const interruptMarks = await speak(AUDIO.interrupt);
  if (failure) throw failure;
  await waitFor(() => story.done_at_ms !== null, TURN_TIMEOUT_MS, 'response.done for the interrupted story reply');
  const next = await waitForReplies(interruptIndex, 'the reply to the interruption');

  const storyResponses = responsesFrom(storyIndex).filter((r) => !next.includes(r));
  const since = (t) => (e) => e.t_ms >= t;
  const bargeIn = report.speech_events.find((e) => e.type === 'input_audio_buffer.speech_started' && e.t_ms >= atInterrupt.t_ms) ?? null;
  const truncateSent = report.client_events.find((e) => e.type === 'conversation.item.truncate' && e.t_ms >= atInterrupt.t_ms) ?? null;
  const cancelSent = report.client_events.find((e) => e.type === 'response.cancel' && e.t_ms >= atInterrupt.t_ms) ?? null;
  const truncated = report.speech_events.filter(since(atInterrupt.t_ms)).find((e) => e.type === 'conversation.item.truncated') ?? null;
  const interruptedEvents = audioInterruptedAt.slice(interruptedBefore);
  let afterBargeIn = null;
  if (bargeIn) {
    const before = story.audio_times.filter(([t]) => t <= bargeIn.t_ms).pop();
    afterBargeIn = story.audio_bytes - (before ? before[1] : 0);
  }
  turnRecord(3, 'story', storyResponses, storyMarks, {
    // what the server did about it: cancelled the response and/or truncated the item
    interrupted: story.status === 'cancelled' || truncated !== null,
    story_response_id: story.id,
    at_interrupt: atInterrupt,
    barge_in_speech_started: bargeIn,
    barge_in_detect_ms: bargeIn && interruptMarks.speechStart !== null ? bargeIn.t_ms - interruptMarks.speechStart : null,
    cancel_latency_ms: bargeIn && story.done_at_ms !== null && story.done_at_ms >= bargeIn.t_ms ? story.done_at_ms - bargeIn.t_ms : null,
    audio_samples_after_barge_in: afterBargeIn === null ? null : afterBargeIn / 2,
    sdk_audio_interrupted: interruptedEvents.length,
    client_response_cancel: cancelSent,
    client_truncate: truncateSent,
    server_truncated: truncated,
  });
  turnRecord(4, 'after_interrupt', next, interruptMarks);
}

// ---------------------------------------------------------------------------------------------
// main

function finish(code) {
  report.ok = code === 0;
  report.failure = failure ? failure.message : null;
  for (const [type, raw] of Object.entries(report.event_counts)) {
    if (type in validatedCounts && validatedCounts[type] < raw) report.sdk_rejected_events[type] = raw - validatedCounts[type];
  }
  try {
    report.history = session.history.map((item) => ({
      item_id: item.itemId,
      type: item.type,
      role: item.role,
      status: item.status,
      content: (item.content ?? []).map((c) => ({ type: c.type, text: c.text, transcript: c.transcript })),
    }));
  } catch (error) {
    report.history = [{ error: String(error) }];
  }
  if (report.turns.length < 4) {
    // keep whatever audio arrived so a failed run can still be looked at
    report.partial_responses = responseOrder.map((id) => {
      const r = responses.get(id);
      return { id, status: r.status, transcript: transcriptOf(r), audio_samples: r.audio_bytes / 2, raw_audio_samples: r.raw_audio_bytes / 2 };
    });
  }
  try {
    fs.writeFileSync(OUT, JSON.stringify(report, null, 2));
  } catch (error) {
    console.error(`realtime_conversation: cannot write ${OUT}: ${error.message}`);
  }
  const rejected = Object.keys(report.sdk_rejected_events);
  if (rejected.length) log(`the SDK rejected (ignored) some server events: ${JSON.stringify(report.sdk_rejected_events)}`);
  if (report.errors.length) log(`${report.errors.length} error(s) recorded, see ${OUT}`);
  if (code === 0) log(`done, report in ${OUT}`);
  else console.error(`realtime_conversation: FAILED: ${report.failure ?? 'unknown error'} (report in ${OUT})`);
  mic.running = false;
  closing = true;
  try {
    session.close();
  } catch {
    // already closed
  }
  process.exit(code);
}

const overall = setTimeout(() => {
  fail(`overall timeout of ${TIMEOUT_MS / 1000} s`);
}, TIMEOUT_MS);

async function main() {
  const apiKey = process.env.VOICE_AGENT_TOKEN || 'none';
  log(`connecting to ${args.url}`);
  try {
    await Promise.race([
      session.connect({ apiKey, url: args.url }),
      sleep(15000).then(() => {
        throw new Error('no WebSocket connection within 15 s');
      }),
    ]);
  } catch (error) {
    fail(`could not connect to ${args.url}: ${errorText(error)}`);
    return 2;
  }
  try {
    await waitFor(() => report.event_counts['session.created'] > 0, 10000, 'session.created');
    await waitFor(() => report.event_counts['session.updated'] > 0, 10000, 'session.updated (the answer to the SDK\'s session.update)');
  } catch {
    return 2;
  }
  log('session ready');
  micLoop().catch((error) => fail(`microphone loop: ${error.message}`));
  try {
    await questionTurn(1, 'question1', AUDIO.question1);
    await questionTurn(2, 'question2', AUDIO.question2);
    await interruptionTurns();
  } catch {
    return 3;
  }
  if (failure) return 3;
  report.problems = findProblems();
  if (report.problems.length) {
    for (const problem of report.problems) log(`PROBLEM: ${problem}`);
    fail(`the conversation ran, but: ${report.problems.join('; ')}`);
    return 4;
  }
  return 0;
}

// Server events the SDK acts on: if its schema rejects one of these, an SDK application misses it.
const SDK_USES = new Set([
  'session.created', 'session.updated', 'response.created', 'response.done', 'response.output_audio.delta',
  'response.output_audio.done', 'response.output_audio_transcript.delta', 'response.output_text.delta',
  'input_audio_buffer.speech_started', 'conversation.item.added', 'conversation.item.done',
  'conversation.item.retrieved', 'conversation.item.deleted', 'conversation.item.truncated',
  'conversation.item.input_audio_transcription.completed', 'response.output_item.added',
  'response.output_item.done', 'response.function_call_arguments.delta',
]);

function findProblems() {
  const problems = [];
  for (const [type, raw] of Object.entries(report.event_counts)) {
    if (SDK_USES.has(type) && validatedCounts[type] < raw) {
      problems.push(`${raw - validatedCounts[type]} of ${raw} ${type} events failed the SDK's schema and were ignored`);
    }
  }
  for (const turn of report.turns) {
    if (!turn.audio_samples) problems.push(`no reply audio reached the SDK in turn ${turn.name}`);
    if (!turn.transcript) problems.push(`no reply transcript in turn ${turn.name}`);
  }
  const story = report.turns.find((t) => t.name === 'story');
  if (story && !story.at_interrupt.story_done_before_interrupt && !story.interrupted) {
    problems.push('the story reply was still going when we barged in, but it was neither cancelled nor truncated');
  }
  // response_cancel_not_active is the OpenAI API's answer to a cancel that crossed the server's own
  // cancel on the wire: a race the protocol allows, not a fault.
  const benign = (e) => e.kind === 'server_error_event' && e.error?.code === 'response_cancel_not_active';
  const errors = report.errors.filter((e) => e.kind !== 'uncaught_exception' && !benign(e));
  if (errors.length) {
    const counts = new Map();
    for (const e of errors) counts.set(errorText(e.error), (counts.get(errorText(e.error)) ?? 0) + 1);
    const listed = [...counts].map(([text, n]) => (n > 1 ? `${n}x ${text}` : text)).join(' | ');
    problems.push(`${errors.length} error event(s): ${listed.slice(0, 600)}`);
  }
  return problems;
}

main().then((code) => {
  clearTimeout(overall);
  finish(code);
}, (error) => {
  fail(`unexpected: ${error?.stack ?? error}`);
  finish(3);
});
