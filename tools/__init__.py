"""Repository tooling run with .venv/bin/python -m tools.<module> (not shipped)."""
