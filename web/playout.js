"use strict";

// What the user hears, measured on the page and reported to the server as agent.client.stats.
//
// Mouth-to-ear: from the end of the user's speech as this page's microphone heard it (the last
// ~10 ms window louder than MIC_SPEECH_RMS before the server's input_audio_buffer.speech_stopped)
// to the first window of the agent's audio louder than REPLY_AUDIBLE_PEAK after it, coming out of
// silence. Both are read from WebAudio analysers every METER_INTERVAL_MS: the microphone as the page
// captures it (after echo cancellation) and the decoded remote stream the <audio> element plays, so
// the measurement includes endpointing, the server, the network and the jitter buffer, but not the
// output device's own latency. Resolution: about 20 ms.
//
// WebRTC stats from RTCPeerConnection.getStats(): the mean jitter buffer delay of the agent's audio
// since the previous report (jitterBufferDelay / jitterBufferEmittedCount, as deltas) and the
// currentRoundTripTime of the selected ICE candidate pair.

const METER_INTERVAL_MS = 10;
const MIC_SPEECH_RMS = 10 ** (-45 / 20); // the server's vad.energy_floor_dbfs
const REPLY_AUDIBLE_PEAK = 300 / 32768; // the server's audio.audible_threshold
// A microphone level older than this when the turn ends is not the end of this turn's speech.
const MAX_SPEECH_END_AGE_MS = 5000;

class LevelMeter {
  constructor(context, stream) {
    this.source = context.createMediaStreamSource(stream);
    this.analyser = context.createAnalyser();
    this.analyser.fftSize = 512; // about 10 ms at 48 kHz
    this.samples = new Float32Array(this.analyser.fftSize);
    this.source.connect(this.analyser); // an analyser runs without being connected to the speakers
  }

  levels() {
    this.analyser.getFloatTimeDomainData(this.samples);
    let peak = 0;
    let energy = 0;
    for (const sample of this.samples) {
      peak = Math.max(peak, Math.abs(sample));
      energy += sample * sample;
    }
    return { peak, rms: Math.sqrt(energy / this.samples.length) };
  }

  disconnect() {
    this.source.disconnect();
  }
}

// Watches the microphone and the agent's audio; calls onMeasured({responseId, mouthToEarS}) once
// per user turn, when the reply to it first becomes audible (mouthToEarS is null when the page has
// no estimate of the end of speech). Create it in a click handler, so that its AudioContext may run.
class PlayoutMonitor {
  constructor(onMeasured) {
    this.onMeasured = onMeasured;
    this.context = new AudioContext();
    this.mic = null;
    this.reply = null;
    this.lastSpeechAt = null;
    this.replyAudible = false;
    this.pending = null; // the turn whose reply we wait to hear: {speechEndedAt, responseId, replyWasQuiet}
    this.timer = setInterval(() => this.tick(), METER_INTERVAL_MS);
  }

  listenToMicrophone(stream) {
    this.mic = new LevelMeter(this.context, stream);
    this.context.resume().catch(() => {});
  }

  listenToReply(stream) {
    this.reply?.disconnect();
    this.reply = new LevelMeter(this.context, stream);
  }

  speechStarted() {
    this.pending = null; // the user spoke again before hearing a reply: nothing to measure
  }

  speechStopped() {
    const now = performance.now();
    const end = this.lastSpeechAt;
    this.pending = {
      speechEndedAt: end !== null && now - end < MAX_SPEECH_END_AGE_MS ? end : null,
      responseId: null,
      replyWasQuiet: !this.replyAudible,
    };
  }

  responseCreated(responseId) {
    if (this.pending && !this.pending.responseId) this.pending.responseId = responseId;
  }

  // A reply that ends before it was heard (cancelled, failed, empty) leaves nothing to measure.
  responseDone(responseId) {
    if (this.pending?.responseId === responseId) this.pending = null;
  }

  tick() {
    const now = performance.now();
    if (this.mic && this.mic.levels().rms > MIC_SPEECH_RMS) this.lastSpeechAt = now;
    if (!this.reply) return;
    const audible = this.reply.levels().peak > REPLY_AUDIBLE_PEAK;
    this.replyAudible = audible;
    const pending = this.pending;
    if (!pending) return;
    // The tail of an interrupted reply may still be playing: wait for quiet, then for the new reply.
    if (!audible) {
      pending.replyWasQuiet = true;
    } else if (pending.replyWasQuiet) {
      this.pending = null;
      const mouthToEarS = pending.speechEndedAt === null ? null : (now - pending.speechEndedAt) / 1000;
      this.onMeasured({ responseId: pending.responseId, mouthToEarS });
    }
  }

  close() {
    clearInterval(this.timer);
    this.mic?.disconnect();
    this.reply?.disconnect();
    this.context.close().catch(() => {});
  }
}

// Jitter buffer delay (as a mean since the previous read) and round-trip time, in seconds, named
// as the agent.client.stats payload names them; a value the browser does not give is left out.
class WebRtcStatsReader {
  constructor(pc) {
    this.pc = pc;
    this.previous = { delay: 0, emitted: 0 };
  }

  async read() {
    const report = await this.pc.getStats();
    let inbound = null;
    let selectedPairId = null;
    const pairs = new Map();
    report.forEach((stats) => {
      if (stats.type === "inbound-rtp" && stats.kind === "audio") inbound = stats;
      else if (stats.type === "transport" && stats.selectedCandidatePairId) selectedPairId = stats.selectedCandidatePairId;
      else if (stats.type === "candidate-pair") pairs.set(stats.id, stats);
    });
    const pair =
      pairs.get(selectedPairId) ?? [...pairs.values()].find((p) => p.nominated && p.state === "succeeded");
    const values = {};
    if (typeof pair?.currentRoundTripTime === "number") values.round_trip_time_s = pair.currentRoundTripTime;
    if (typeof inbound?.jitterBufferDelay === "number" && typeof inbound.jitterBufferEmittedCount === "number") {
      const emitted = inbound.jitterBufferEmittedCount - this.previous.emitted;
      if (emitted > 0) values.jitter_buffer_delay_s = (inbound.jitterBufferDelay - this.previous.delay) / emitted;
      this.previous = { delay: inbound.jitterBufferDelay, emitted: inbound.jitterBufferEmittedCount };
    }
    return values;
  }
}
