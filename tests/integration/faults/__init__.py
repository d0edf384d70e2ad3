"""Fault injection: the pipeline under an outage, a crash or a duplicate, and what it keeps.

Each scenario ends with the same invariants (``pipeline.assert_no_email_lost_or_sent_twice``).
``HERALD_FAULT_N`` sets how many messages each scenario moves (20 by default, so
``make test`` stays quick; ``python -m bench.faults`` runs them with 1,000).
"""
