"""The HTTP API (FastAPI): routes under /v1, health checks, RFC 9457 problem details."""
