"""AWS adapters of the ports in ``shared.ports``: SES, SQS, and the mapping of their errors."""
