"""Headless WebRTC client for the voice agent: plays audio as a microphone, records the agent's replies."""
