"""Models served by another process over HTTP: vLLM and other OpenAI-compatible servers."""
