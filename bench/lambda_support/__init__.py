"""Support of the Lambda benchmarks (``bench.task_runner``, ``bench.cold_start``).

``fakes`` holds in-memory, boto3-like SES, SQS and DynamoDB clients and SQS events for the
task runner; ``artifact`` builds the Lambda artifact for this machine and runs Python as
Lambda's init does. ``fakes`` needs only the standard library and botocore, so a process
that sees nothing but the built artifact and a boto3 install can import it too.
"""
