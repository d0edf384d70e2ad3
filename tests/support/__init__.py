"""What tests share, in one place (a test module never imports another test module).

- builders: the rows tests start from (tenants and keys, messages in any state,
  suppressions); the one place tests insert them
- api: a valid email body, scheduling it, reading an RFC 9457 problem
- cli: the herald command in-process (run_cli) and its --help as an operator sees it
- consumers: the worker's results and feedback consumers driven on one queue each
- feedback / feedback_events: delivery feedback recorded as the worker records it, and
  SES's sample events about a test's own message
- fakes: valid contract objects and in-memory fakes of the ports
- lambdas, tracing, emf: a Lambda context and its log lines, ddtrace's spans, EMF metrics
- migrations: databases at a given migration
- pipeline: the template's queues, table and SES configuration, made by the local
  system's own factory under a test's name prefix
- processes: herald api/worker as child processes
- queues, waits: draining a queue, waiting for another process
"""
