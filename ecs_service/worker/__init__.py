"""The worker: the outbox relay (PostgreSQL -> task queue) and the results consumer
(result queue -> PostgreSQL), two loops of one process."""
