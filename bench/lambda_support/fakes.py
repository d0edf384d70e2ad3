"""In-memory SES, SQS and DynamoDB clients, and SQS events of ``email.send`` tasks.

The clients are boto3-like: each implements exactly the calls the task runner makes
(SESv2 ``send_email``; SQS ``send_message``; DynamoDB ``put_item``, ``get_item``,
``update_item``, ``delete_item`` as Powertools' idempotency layer makes them), answers as
AWS does, and fails loudly on anything else, so a benchmark cannot measure a code path
that skips work. The DynamoDB fake evaluates the condition expressions it is given (the
idempotency layer's ``attribute_not_exists(#id) OR #expiry < :now OR (...)``) and raises
``ConditionalCheckFailedException`` with the old item, as DynamoDB does.

Only the standard library and botocore are imported: a process that sees nothing but the
built Lambda artifact and a boto3 install can use this module too.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

REGION = "us-east-1"
ACCOUNT = "123456789012"
RESULT_QUEUE_URL = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/herald-bench-results"
TASK_DLQ_URL = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/herald-bench-tasks-dlq"
IDEMPOTENCY_TABLE = "herald-bench-idempotency"
SENDER = "herald@example.com"
TENANT_ID = "7d3f1a2e-5b6c-4d8e-9f01-23456789abcd"

# What the handler module reads at import (shared.settings, shared.observability) and
# what Lambda itself sets; credentials are fake: no request ever leaves the process.
LAMBDA_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIABENCHFAKE0000000",
    "AWS_SECRET_ACCESS_KEY": "bench-fake-secret",
    "AWS_SESSION_TOKEN": "bench-fake-token",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_LAMBDA_FUNCTION_NAME": "herald-bench-TaskRunnerFunction",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
    # Lambda's runtime sets TZ=:UTC. Without TZ, glibc reads /etc/localtime again for every
    # localtime() call: ~30 % of a log line's cost, which Lambda never pays.
    "TZ": ":UTC",
    "RESULT_QUEUE_URL": RESULT_QUEUE_URL,
    "TASK_DLQ_URL": TASK_DLQ_URL,
    "IDEMPOTENCY_TABLE": IDEMPOTENCY_TABLE,
    "SENDER_EMAIL": SENDER,
    "POWERTOOLS_SERVICE_NAME": "herald-task-runner",
    "POWERTOOLS_METRICS_NAMESPACE": "Herald",
    "ENVIRONMENT": "bench",
    "LOG_LEVEL": "INFO",
}


def _client_error(code: str, message: str, operation: str, **extra: Any) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": message}, **extra}
    return ClientError(response, operation)


class FakeSesV2:
    """SESv2 with one call, ``send_email`` (simple content), keeping what it was sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_email(self, **request: Any) -> dict[str, Any]:
        if not request.get("FromEmailAddress"):
            raise _client_error("BadRequestException", "FromEmailAddress is required", "SendEmail")
        destination = request["Destination"]
        if not any(destination.get(k) for k in ("ToAddresses", "CcAddresses", "BccAddresses")):
            raise _client_error("BadRequestException", "no recipient", "SendEmail")
        simple = request["Content"]["Simple"]
        if not simple["Subject"]["Data"] or not simple["Body"]:
            raise _client_error("BadRequestException", "empty content", "SendEmail")
        self.sent.append(request)
        return {"MessageId": f"bench-{len(self.sent):08d}"}


class FakeSqs:
    """SQS with one call, ``send_message``, to known queues; keeps bodies per queue."""

    def __init__(self, queue_urls: tuple[str, ...] = (RESULT_QUEUE_URL, TASK_DLQ_URL)) -> None:
        self.queues: dict[str, list[dict[str, Any]]] = {url: [] for url in queue_urls}

    def send_message(
        self, *, QueueUrl: str, MessageBody: str, MessageAttributes: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        queue = self.queues.get(QueueUrl)
        if queue is None:
            raise _client_error(
                "AWS.SimpleQueueService.NonExistentQueue", "no such queue", "SendMessage"
            )
        if not MessageBody:
            raise _client_error("MissingParameter", "MessageBody is required", "SendMessage")
        queue.append({"Body": MessageBody, "MessageAttributes": MessageAttributes or {}})
        return {"MessageId": str(uuid.uuid4())}


Item = dict[str, dict[str, str]]
Condition = Callable[[Item | None, dict[str, str], dict[str, dict[str, str]]], bool]

_TOKEN = re.compile(r"\s*(\(|\)|AND\b|OR\b|NOT\b|<=|>=|<>|<|>|=|[a-z_]+\(#\w+\)|#\w+|:\w+)")


def _value(attribute: dict[str, str]) -> Any:
    """A comparable Python value of a DynamoDB attribute value (N or S)."""
    if "N" in attribute:
        return float(attribute["N"])
    if "S" in attribute:
        return attribute["S"]
    raise NotImplementedError(f"attribute type of {attribute} is not supported by the fake")


def _compile_condition(expression: str) -> Condition:
    """Compile a DynamoDB condition expression of the forms the idempotency layer uses.

    Grammar: ``or := and (OR and)*``, ``and := unary (AND unary)*``, ``unary := NOT unary
    | ( or ) | attribute_exists(#n) | attribute_not_exists(#n) | #n OP :v``.
    """
    tokens: list[str] = []
    position = 0
    while position < len(expression.rstrip()):
        match = _TOKEN.match(expression, position)
        if match is None:
            raise NotImplementedError(f"condition not supported by the fake: {expression!r}")
        tokens.append(match.group(1))
        position = match.end()
    index = 0

    def take() -> str:
        nonlocal index
        index += 1
        return tokens[index - 1]

    def peek() -> str | None:
        return tokens[index] if index < len(tokens) else None

    def parse_or() -> Condition:
        terms = [parse_and()]
        while peek() == "OR":
            take()
            terms.append(parse_and())
        return lambda item, names, values: any(t(item, names, values) for t in terms)

    def parse_and() -> Condition:
        terms = [parse_unary()]
        while peek() == "AND":
            take()
            terms.append(parse_unary())
        return lambda item, names, values: all(t(item, names, values) for t in terms)

    def parse_unary() -> Condition:
        token = take()
        if token == "NOT":
            inner = parse_unary()
            return lambda item, names, values: not inner(item, names, values)
        if token == "(":
            inner = parse_or()
            if take() != ")":
                raise NotImplementedError(f"unbalanced condition: {expression!r}")
            return inner
        function = re.fullmatch(r"(attribute_exists|attribute_not_exists)\((#\w+)\)", token)
        if function:
            wanted, placeholder = function.group(1) == "attribute_exists", function.group(2)
            return lambda item, names, values: (
                (item is not None and names[placeholder] in item) == wanted
            )
        if token.startswith("#"):
            operator, operand = take(), take()
            compare: dict[str, Callable[[Any, Any], bool]] = {
                "=": lambda a, b: a == b,
                "<>": lambda a, b: a != b,
                "<": lambda a, b: a < b,
                "<=": lambda a, b: a <= b,
                ">": lambda a, b: a > b,
                ">=": lambda a, b: a >= b,
            }
            if operator not in compare or not operand.startswith(":"):
                raise NotImplementedError(f"comparison not supported: {expression!r}")
            op = compare[operator]

            def comparison(
                item: Item | None, names: dict[str, str], values: dict[str, dict[str, str]]
            ) -> bool:
                if item is None or names[token] not in item:
                    return False  # DynamoDB: a comparison with a missing attribute is false
                stored, given = item[names[token]], values[operand]
                if set(stored) != set(given):
                    return False  # different types never compare equal or ordered
                return op(_value(stored), _value(given))

            return comparison
        raise NotImplementedError(f"condition not supported by the fake: {expression!r}")

    condition = parse_or()
    if index != len(tokens):
        raise NotImplementedError(f"trailing tokens in condition: {expression!r}")
    return condition


_SET_CLAUSE = re.compile(r"\s*(#\w+)\s*=\s*(:\w+)\s*")


class FakeDynamoDB:
    """One DynamoDB table with a string hash key, through the client's low-level calls."""

    def __init__(self, table_name: str = IDEMPOTENCY_TABLE, key_attribute: str = "id") -> None:
        self.table_name = table_name
        self.key_attribute = key_attribute
        self.items: dict[str, Item] = {}
        self.conditional_check_failures = 0
        self._conditions: dict[str, Condition] = {}

    def _key(self, table: str, key: Item, operation: str) -> str:
        if table != self.table_name:
            raise _client_error("ResourceNotFoundException", "no such table", operation)
        if set(key) != {self.key_attribute} or "S" not in key[self.key_attribute]:
            raise _client_error("ValidationException", "key does not match the schema", operation)
        return key[self.key_attribute]["S"]

    def _check(
        self,
        operation: str,
        item: Item | None,
        expression: str | None,
        names: dict[str, str] | None,
        values: dict[str, dict[str, str]] | None,
        return_old: str | None,
    ) -> None:
        if expression is None:
            return
        condition = self._conditions.get(expression)
        if condition is None:
            condition = self._conditions[expression] = _compile_condition(expression)
        if not condition(item, names or {}, values or {}):
            self.conditional_check_failures += 1
            extra = {"Item": dict(item)} if return_old == "ALL_OLD" and item is not None else {}
            raise _client_error(
                "ConditionalCheckFailedException",
                "The conditional request failed",
                operation,
                **extra,
            )

    def put_item(
        self,
        *,
        TableName: str,
        Item: Item,
        ConditionExpression: str | None = None,
        ExpressionAttributeNames: dict[str, str] | None = None,
        ExpressionAttributeValues: dict[str, dict[str, str]] | None = None,
        ReturnValuesOnConditionCheckFailure: str | None = None,
    ) -> dict[str, Any]:
        key = self._key(TableName, {self.key_attribute: Item[self.key_attribute]}, "PutItem")
        self._check(
            "PutItem",
            self.items.get(key),
            ConditionExpression,
            ExpressionAttributeNames,
            ExpressionAttributeValues,
            ReturnValuesOnConditionCheckFailure,
        )
        self.items[key] = dict(Item)
        return {}

    def get_item(
        self, *, TableName: str, Key: Item, ConsistentRead: bool = False
    ) -> dict[str, Any]:
        item = self.items.get(self._key(TableName, Key, "GetItem"))
        return {} if item is None else {"Item": dict(item)}

    def update_item(
        self,
        *,
        TableName: str,
        Key: Item,
        UpdateExpression: str,
        ExpressionAttributeNames: dict[str, str],
        ExpressionAttributeValues: dict[str, dict[str, str]],
        ConditionExpression: str | None = None,
    ) -> dict[str, Any]:
        key = self._key(TableName, Key, "UpdateItem")
        self._check(
            "UpdateItem",
            self.items.get(key),
            ConditionExpression,
            ExpressionAttributeNames,
            ExpressionAttributeValues,
            None,
        )
        action, _, clauses = UpdateExpression.strip().partition(" ")
        if action != "SET":
            raise NotImplementedError(f"update not supported by the fake: {UpdateExpression!r}")
        item = dict(self.items.get(key) or Key)
        for clause in clauses.split(","):
            match = _SET_CLAUSE.fullmatch(clause)
            if match is None:
                raise NotImplementedError(f"update not supported: {UpdateExpression!r}")
            name, value = match.groups()
            item[ExpressionAttributeNames[name]] = ExpressionAttributeValues[value]
        self.items[key] = item
        return {}

    def delete_item(self, *, TableName: str, Key: Item) -> dict[str, Any]:
        self.items.pop(self._key(TableName, Key, "DeleteItem"), None)
        return {}


class FakeAws:
    """One fake of each service the task runner uses; ``client(name)`` stands in for boto3's
    (``boto3.client`` or, patched in as a bound method, ``boto3.session.Session.client``)."""

    def __init__(self) -> None:
        self.sesv2 = FakeSesV2()
        self.sqs = FakeSqs()
        self.dynamodb = FakeDynamoDB()

    def client(self, service_name: str, *_: Any, **__: Any) -> Any:
        fakes = {"sesv2": self.sesv2, "sqs": self.sqs, "dynamodb": self.dynamodb}
        if service_name not in fakes:
            raise NotImplementedError(f"no fake for the {service_name} client")
        return fakes[service_name]


class LambdaContext:
    """What Lambda passes as ``context``, as far as Powertools reads it."""

    function_name = LAMBDA_ENV["AWS_LAMBDA_FUNCTION_NAME"]
    function_version = "$LATEST"
    invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function_name}"
    memory_limit_in_mb = 512
    aws_request_id = "6f2c2a8e-0b4b-4c39-9f7e-3d1f3e0c9a11"
    log_group_name = "/herald/bench/task-runner"
    log_stream_name = "2026/11/24/[$LATEST]bench"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000


def email_task_body(index: int, task_id: str) -> str:
    """The JSON body of one ``email.send`` task, shaped like ``events/email-batch-10.json``."""
    return json.dumps(
        {
            "version": 1,
            "task_id": task_id,
            "kind": "email.send",
            "tenant_id": TENANT_ID,
            "created_at": "2026-11-24T09:00:00Z",
            "send_at": "2026-11-24T09:00:00Z",
            "payload": {
                "sender": SENDER,
                "to": [f"reader{index}@example.org"],
                "cc": [],
                "bcc": [],
                "reply_to": [],
                "subject": f"Herald benchmark {index}",
                "text": f"Hello from Herald, message {index}.",
                "html": None,
            },
        },
        separators=(",", ":"),
    )


def sqs_event(first_index: int, size: int) -> dict[str, Any]:
    """An SQS event of ``size`` records, each a new task (new ``task_id``), as Lambda sends it."""
    records = []
    for index in range(first_index, first_index + size):
        body = email_task_body(index, str(uuid.uuid4()))
        records.append(
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": f"AQEBbench{index:010d}",
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1795510800000",
                    "SenderId": "AROAEXAMPLEID:herald-worker",
                    "ApproximateFirstReceiveTimestamp": "1795510800050",
                },
                "messageAttributes": {},
                "md5OfBody": "2f3ef064f9fe9dd85c01de7e123b598c",
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:herald-bench-TaskQueue",
                "awsRegion": REGION,
            }
        )
    return {"Records": records}
