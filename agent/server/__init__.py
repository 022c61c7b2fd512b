"""The HTTP server: page, offer/answer, health, readiness, metrics."""
