"""The agent over a WebSocket: OpenAI's Realtime protocol (``realtime.py``) and the simple ``/ws`` (``simple.py``)."""
