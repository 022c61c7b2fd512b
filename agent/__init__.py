"""Realtime voice agent server: WebRTC audio in, spoken replies out."""

__version__ = "0.1.0"
