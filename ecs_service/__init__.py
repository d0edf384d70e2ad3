"""Herald's backend container: the FastAPI api, the worker (relay and results consumer),
the database schema and its migrations, and the ``herald`` command that runs them all."""
