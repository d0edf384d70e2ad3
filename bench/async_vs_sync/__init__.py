"""Two minimal FastAPI apps, sync and async, for ``bench/api_async_vs_sync.py``.

``sync_app`` and ``async_app`` serve the same two endpoints over the same table, model and
pool sizes; only the database access style differs. ``common`` holds what they share.
"""
