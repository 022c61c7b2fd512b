"""What the store answers: pydantic models, used as they are for the API's responses."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class UserOut(_Out):
    id: int
    name: str
    role: str
    created_at: datetime


class UserRow(UserOut):
    """A user with the password hash, for logging in; the hash is never serialized."""

    password_hash: str = Field(exclude=True, repr=False)


class TurnOut(_Out):
    idx: int
    speaker: str
    role: str
    start_ms: int
    end_ms: int
    text: str
    heard_text: str | None = None
    emotion: str | None = None
    language: str | None = None
    latency: dict[str, Any] | None = None


class CallSummary(_Out):
    id: str
    owner_id: int | None
    source: str
    file_name: str | None
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    languages: list[str]
    status: str
    error: str | None
    progress: float
    has_audio: bool
    tags: list[str] = Field(description="effective tags: the user's tags when the call has any, else the AI's")
    ai_tags: list[str]
    user_tags: list[str]
    turn_count: int
    created_at: datetime


class CallDetail(CallSummary):
    turns: list[TurnOut]
    analysis: dict[str, Any] | None
    analysis_version: int | None
    audio_path: str | None
    audio_mime: str | None


class JobOut(_Out):
    id: int
    call_id: str
    kind: str
    attempts: int
    status: str


class Analytics(BaseModel):
    total_calls: int
    total_tags: int
    average_tags_per_call: float
    calls_with_transcript: int
    calls_without_transcript: int
    tag_distribution: dict[str, int]
    calls_per_day: dict[str, int] = Field(description="YYYY-MM-DD (UTC) to the number of calls started that day")
    calls_per_language: dict[str, int]
    emotion_distribution: dict[str, int] = Field(description="over the turns of the calls")
    median_voice_to_voice_s: float | None = Field(description="over the assistant turns of live calls")
