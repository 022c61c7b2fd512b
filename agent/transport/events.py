"""The session's events: JSON sent to our page over the data channel as they are listed here.

Names and shapes follow the OpenAI Realtime API where it has the same event; events of our own are
prefixed ``agent.``. Every event has ``type`` and ``event_id``. Over a WebSocket the protocol turns
them into its own messages (``agent/transport/websocket/realtime.py``, ``simple.py``).

Server -> client:
  session.created                           {session: {id, language}}
  agent.state                               {state: listening|thinking|speaking}
  input_audio_buffer.speech_started         {audio_start_ms, item_id}
  input_audio_buffer.speech_stopped         {audio_end_ms, item_id}
  input_audio_buffer.committed              {item_id}  (the turn ended, by VAD or a client's commit)
  input_audio_buffer.cleared                {}
  conversation.item.input_audio_transcription.completed
                                            {item_id, content_index, transcript, language, confidence}
  response.created                          {response: {id, status: "in_progress"}}
  response.audio_transcript.delta           {response_id, item_id, output_index, content_index, delta}
  response.audio_transcript.done            {response_id, item_id, output_index, content_index, transcript}
  response.done                             {response: {id, status: completed|cancelled|failed, output_text}}
  conversation.item.truncated               {item_id, response_id, content_index, audio_end_ms, text}
                                            (an interrupted reply: what was heard, and how long)
  agent.barge_in                            {response_id, latency_s (speech onset -> audio stopped),
                                             stopped_after_decision_s, audible_frames_after_decision}
  agent.reply.resumed                       {response_id}  (the interruption held no words)
  agent.turn.latency                        {response_id, endpointing_s, asr_s, llm_first_token_s,
                                             llm_per_token_s, llm_first_phrase_s, tts_first_audio_s,
                                             voice_to_voice_s}
  error                                     {error: {type, message}}

Client -> server:
  agent.client.stats                        {response_id?, mouth_to_ear_s?, jitter_buffer_delay_s?,
                                             round_trip_time_s?}  (what the page measured of a reply)

A reply started speculatively (on a pause, before the end of turn is confirmed) sends none of its
events until the turn has ended; if the user goes on speaking it is dropped without a trace.
"""

from __future__ import annotations

import itertools
from typing import Any

_event_ids = itertools.count(1)


def make_event(event_type: str, **fields: Any) -> dict[str, Any]:
    return {"type": event_type, "event_id": f"event_{next(_event_ids)}", **fields}
