# The voice agent on CPU, installed the way README's first command does it (scripts/install.sh).
# Used by docker-compose.yml; run it with the host network so WebRTC's UDP ports are reachable.
FROM python:3.11-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY agent agent
COPY scripts scripts
COPY config config
COPY web web
RUN scripts/install.sh && rm -rf /root/.cache/pip
ENV MODEL_CACHE_DIR=/cache
EXPOSE 8000
CMD [".venv/bin/voice-agent", "serve", "--host", "0.0.0.0", "--port", "8000"]
