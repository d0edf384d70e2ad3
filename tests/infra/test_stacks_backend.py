"""stacks/backend.yaml: HTTPS-only ALB, private non-root read-only tasks, secrets kept secret
(and read at run time, so rotation needs no restart), safe deployments, autoscaling that a
stack update leaves alone, least-privilege roles."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.infra.conftest import (
    NESTED_STACKS,
    Template,
    container_definitions,
    load_stack,
    policy_statements,
    properties,
    referenced_id,
    resolve_datadog,
    resources_of_type,
)

# ELBSecurityPolicy-TLS13-1-2-2021-06 or a newer TLS 1.3 / 1.2-only policy without the
# "Ext" variants' legacy ciphers.
ACCEPTED_TLS_POLICIES = {
    "ELBSecurityPolicy-TLS13-1-2-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
    "ELBSecurityPolicy-TLS13-1-3-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-PQ-2025-09",
    "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09",
    "ELBSecurityPolicy-TLS13-1-3-PQ-2025-09",
}
SECRET_LOOKING = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|API_KEY|PRIVATE|CREDENTIAL", re.I)
# Named like a secret, holds none: the secret's ARN, useless without the task role.
# Names of secrets, not secrets: the database secret's ARN, the KMS key of tenant secrets.
NOT_SECRETS = {"DATABASE_SECRET_ARN", "TENANT_SECRET_KMS_KEY_ID"}
# Dynamic references CloudFormation would resolve into a plain variable's value.
RESOLVED_SECRET = re.compile(r"\{\{resolve:(secretsmanager|ssm-secure):")
TASK_ROLES = {"api": "ApiTaskRole", "migrate": "MigrationTaskRole", "worker": "WorkerTaskRole"}
COMMANDS = {
    "api": ["herald", "api"],
    "worker": ["herald", "worker"],
    "migrate": ["herald", "migrate"],
}
STOP_TIMEOUTS = {"api": 30, "worker": 60}


@pytest.fixture(scope="module")
def backend() -> Template:
    """stacks/backend.yaml as deployed with Datadog off (its default), each process's
    stacks/service.yaml inlined under its names (ApiTaskDefinition, WorkerTaskRole, ...).
    The Datadog sidecars, and the app containers with Datadog on, are
    test_datadog_template.py's."""
    resolved: Template = resolve_datadog(load_stack(NESTED_STACKS["BackendStack"]), enabled=False)
    return resolved


def load_balancer_attributes(backend: Template) -> dict[str, Any]:
    return {
        attribute["Key"]: attribute["Value"]
        for attribute in properties(backend, "LoadBalancer")["LoadBalancerAttributes"]
    }


def listener(backend: Template, port: int) -> dict[str, Any]:
    [found] = [
        properties(backend, listener_id)
        for listener_id in resources_of_type(backend, "AWS::ElasticLoadBalancingV2::Listener")
        if properties(backend, listener_id)["Port"] == port
    ]
    return found


def environment(container: dict[str, Any]) -> dict[str, Any]:
    return {variable["Name"]: variable["Value"] for variable in container.get("Environment", [])}


# ----------------------------------------------------------------------------- ALB


def test_alb_is_internet_facing_in_the_public_subnets(backend: Template) -> None:
    alb = properties(backend, "LoadBalancer")

    assert alb["Scheme"] == "internet-facing"
    assert alb["Subnets"] == {"Ref": "PublicSubnetIds"}
    assert alb["SecurityGroups"] == [{"Ref": "AlbSecurityGroupId"}]


def test_https_listener_uses_the_certificate_and_a_tls_1_2_plus_policy(backend: Template) -> None:
    https = listener(backend, 443)

    assert https["Protocol"] == "HTTPS"
    assert https["SslPolicy"] in ACCEPTED_TLS_POLICIES
    assert https["Certificates"] == [{"CertificateArn": {"Ref": "CertificateArn"}}]
    assert https["DefaultActions"] == [
        {"Type": "forward", "TargetGroupArn": {"Ref": "ApiTargetGroup"}}
    ]


def test_http_listener_only_redirects_to_https_permanently(backend: Template) -> None:
    [action] = listener(backend, 80)["DefaultActions"]

    assert action["Type"] == "redirect"
    assert action["RedirectConfig"]["Protocol"] == "HTTPS"
    assert action["RedirectConfig"]["Port"] == "443"
    assert action["RedirectConfig"]["StatusCode"] == "HTTP_301"


def test_alb_drops_invalid_headers_mitigates_desync_and_logs_access(backend: Template) -> None:
    attributes = load_balancer_attributes(backend)

    assert attributes["routing.http.drop_invalid_header_fields.enabled"] == "true"
    assert attributes["routing.http.desync_mitigation_mode"] in ("defensive", "strictest")
    assert attributes["access_logs.s3.enabled"] == "true"
    assert attributes["access_logs.s3.bucket"] == {"Ref": "AccessLogBucket"}
    assert attributes["deletion_protection.enabled"] == {"Fn::If": ["IsProd", "true", "false"]}


def test_access_log_bucket_is_encrypted_private_and_tls_only(backend: Template) -> None:
    # Given the access log bucket and its policy
    bucket = properties(backend, "AccessLogBucket")
    [rule] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    statements = {
        s.sid: s for s in policy_statements(backend) if s.owner == "AccessLogBucketPolicy"
    }

    # Then it is encrypted (SSE-S3: the only encryption ALB log delivery supports), blocks
    # every form of public access, and refuses requests without TLS
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    deny = statements["DenyInsecureTransport"]
    assert not deny.allows
    assert deny.statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    # And the ALB may only put objects under its own prefix
    allow = statements["AllowAlbAccessLogDelivery"]
    assert allow.actions == ["s3:PutObject"]
    assert allow.resources == [
        {"Fn::Sub": "${AccessLogBucket.Arn}/alb/AWSLogs/${AWS::AccountId}/*"}
    ]


def test_target_group_checks_liveness_and_drains_before_stopping(backend: Template) -> None:
    group = properties(backend, "ApiTargetGroup")
    attributes = {a["Key"]: a["Value"] for a in group["TargetGroupAttributes"]}

    assert group["TargetType"] == "ip"
    assert group["Port"] == 8000
    assert group["HealthCheckPath"] == "/healthz"
    assert group["HealthyThresholdCount"] <= 3
    assert 2 <= group["UnhealthyThresholdCount"] <= 5
    assert group["HealthCheckTimeoutSeconds"] < group["HealthCheckIntervalSeconds"]
    assert 0 < int(attributes["deregistration_delay.timeout_seconds"]) <= 60


# ------------------------------------------------------------------------ services


@pytest.mark.parametrize("service_id", ["ApiService", "WorkerService"])
def test_service_runs_private_and_rolls_back_a_failed_deployment(
    backend: Template, service_id: str
) -> None:
    service = properties(backend, service_id)
    deployment = service["DeploymentConfiguration"]

    assert service["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"
    assert service["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"] == {
        "Ref": "PrivateSubnetIds"
    }
    assert deployment["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    assert (deployment["MinimumHealthyPercent"], deployment["MaximumPercent"]) == (100, 200)


DEPLOYMENT_ALARMS = {
    "ApiService": ["ApiTarget5xxRateAlarm", "ApiUnhealthyHostsAlarm"],
    "WorkerService": ["RelayRowsFailedAlarm", "ResultsRejectedAlarm"],
}


@pytest.mark.parametrize("service_id", sorted(DEPLOYMENT_ALARMS))
def test_service_rolls_back_a_release_that_starts_fine_when_its_alarms_fire(
    backend: Template, service_id: str
) -> None:
    # Given the service's deployment alarms, as the nested stack receives their names
    alarms = properties(backend, service_id)["DeploymentConfiguration"]["Alarms"]
    split = alarms["AlarmNames"]["Fn::Split"]
    joined = split[1]["Fn::Join"]

    # Then ECS watches exactly those alarms of this stack and rolls back when one fires
    assert (alarms["Enable"], alarms["Rollback"]) == (True, True)
    assert split[0] == joined[0] == ","
    assert [referenced_id(name) for name in joined[1]] == DEPLOYMENT_ALARMS[service_id]
    for alarm_id in DEPLOYMENT_ALARMS[service_id]:
        assert backend["Resources"][alarm_id]["Type"] == "AWS::CloudWatch::Alarm"


def test_every_service_is_covered_by_the_private_network_checks(backend: Template) -> None:
    assert set(resources_of_type(backend, "AWS::ECS::Service")) == {"ApiService", "WorkerService"}


def test_only_the_api_sits_behind_the_load_balancer(backend: Template) -> None:
    assert properties(backend, "ApiService")["LoadBalancers"] == [
        {"ContainerName": "api", "ContainerPort": 8000, "TargetGroupArn": {"Ref": "ApiTargetGroup"}}
    ]
    assert "LoadBalancers" not in properties(backend, "WorkerService")


def test_api_autoscaling_keeps_two_tasks_and_a_stack_update_does_not_reset_it(
    backend: Template,
) -> None:
    # Given the api service and its scalable target
    target = properties(backend, "ApiScalableTarget")

    # Then the service leaves its count to autoscaling (no DesiredCount for an update to
    # reset), and autoscaling keeps two tasks, one per AZ, unless told otherwise (dev: one)
    assert "DesiredCount" not in properties(backend, "ApiService")
    assert target["ResourceId"] == {"Fn::Sub": "service/${Cluster}/${ApiService.Name}"}
    assert target["MinCapacity"] == {"Ref": "ApiMinTasks"}
    assert int(backend["Parameters"]["ApiMinTasks"]["Default"]) >= 2
    assert int(backend["Parameters"]["ApiMinTasks"]["MinValue"]) == 1


def test_api_scales_on_cpu_and_on_requests_per_task(backend: Template) -> None:
    metrics = {
        policy["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"][
            "PredefinedMetricType"
        ]
        for policy_id in resources_of_type(backend, "AWS::ApplicationAutoScaling::ScalingPolicy")
        if (policy := properties(backend, policy_id))["PolicyType"] == "TargetTrackingScaling"
        and policy["ScalingTargetId"] == {"Ref": "ApiScalableTarget"}
    }

    assert metrics == {"ECSServiceAverageCPUUtilization", "ALBRequestCountPerTarget"}


def test_worker_autoscaling_stays_between_its_task_count_and_its_maximum(
    backend: Template,
) -> None:
    # Given the worker's scalable target
    target = properties(backend, "WorkerScalableTarget")

    # Then the service leaves its count to autoscaling, between the two parameters
    assert "DesiredCount" not in properties(backend, "WorkerService")
    assert target["ResourceId"] == {"Fn::Sub": "service/${Cluster}/${WorkerService.Name}"}
    assert target["MinCapacity"] == {"Ref": "WorkerTaskCount"}
    # and WorkerTaskCount 0 still pauses sending: the maximum is then 0 as well
    assert target["MaxCapacity"] == {"Fn::If": ["WorkerPaused", 0, {"Ref": "WorkerMaxTasks"}]}
    assert backend["Conditions"]["WorkerPaused"] == {
        "Fn::Equals": [{"Ref": "WorkerTaskCount"}, "0"]
    }
    assert int(backend["Parameters"]["WorkerMaxTasks"]["MaxValue"]) >= int(
        backend["Parameters"]["WorkerTaskCount"]["MaxValue"]
    )


def test_worker_scales_on_the_relay_backlog_the_send_rate_does_not_explain_per_running_task(
    backend: Template,
) -> None:
    # Given the worker's one scaling policy
    [policy] = [
        policy
        for policy_id in resources_of_type(backend, "AWS::ApplicationAutoScaling::ScalingPolicy")
        if (policy := properties(backend, policy_id))["ScalingTargetId"]
        == {"Ref": "WorkerScalableTarget"}
    ]
    queries = {
        query["Id"]: query
        for query in policy["TargetTrackingScalingPolicyConfiguration"][
            "CustomizedMetricSpecification"
        ]["Metrics"]
    }

    # Then it tracks the worker's own RelayBacklogUnpaced divided by its running tasks: more
    # tasks cannot release a backlog the shared send rate holds any sooner
    backlog = queries["backlog"]["MetricStat"]["Metric"]
    assert (backlog["Namespace"], backlog["MetricName"]) == ("Herald", "RelayBacklogUnpaced")
    assert backlog["Dimensions"] == [
        {"Name": "service", "Value": "herald-worker"},
        {"Name": "environment", "Value": {"Ref": "Environment"}},
    ]
    running = queries["running"]["MetricStat"]["Metric"]
    assert running["MetricName"] == "RunningTaskCount"
    assert [query["Id"] for query in queries.values() if query["ReturnData"]] == ["perTask"]
    assert "backlog / running" in queries["perTask"]["Expression"]


# ------------------------------------------------------------------------ containers


def test_every_container_runs_the_image_with_its_command(backend: Template) -> None:
    containers = container_definitions(backend)

    assert set(containers) == set(COMMANDS)
    for name, container in containers.items():
        assert container["Image"] == {"Ref": "ImageUri"}, name
        assert container["Command"] == COMMANDS[name], name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_container_is_non_root_read_only_and_drops_every_capability(
    backend: Template, name: str
) -> None:
    container = container_definitions(backend)[name]
    user = str(container["User"]).split(":")

    assert container["ReadonlyRootFilesystem"] is True
    assert user[0] not in ("0", "root") and all(part.isdigit() for part in user)
    assert container.get("Privileged", False) is False
    assert container["LinuxParameters"]["Capabilities"]["Drop"] == ["ALL"]
    assert container["MountPoints"] == [
        {"SourceVolume": "tmp", "ContainerPath": "/tmp", "ReadOnly": False}
    ]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_database_secret_is_read_at_run_time_never_put_in_the_environment(
    backend: Template, name: str
) -> None:
    container = container_definitions(backend)[name]
    variables = environment(container)

    # No plain variable holds a secret: none is named like one (but the secret's ARN) and
    # none resolves one when the stack deploys
    assert [key for key in variables if SECRET_LOOKING.search(key) and key not in NOT_SECRETS] == []
    assert [key for key, value in variables.items() if RESOLVED_SECRET.search(str(value))] == []
    # ECS injects nothing: the migration reads the secret through its ARN, at connect time
    # and again after each rotation (an injected copy would go stale at the next rotation);
    # the api and worker have no secret at all (IAM tokens: the test below)
    assert "Secrets" not in container
    assert variables.get("DATABASE_SECRET_ARN") == (
        {"Ref": "DatabaseSecretArn"} if name == "migrate" else None
    )
    assert variables["DATABASE_HOST"] == {"Ref": "DatabaseHost"}
    # And every connection verifies the server against the image's RDS bundle
    assert variables["DATABASE_SSLMODE"] == "verify-full"


@pytest.mark.parametrize("name", ["api", "worker"])
def test_api_and_worker_log_in_as_herald_app_with_iam_tokens(backend: Template, name: str) -> None:
    variables = environment(container_definitions(backend)[name])

    assert (variables["DATABASE_AUTH"], variables["DATABASE_USER"]) == ("iam", "herald_app")


def test_containers_get_the_environment_the_contract_names(backend: Template) -> None:
    containers = container_definitions(backend)
    api, worker = environment(containers["api"]), environment(containers["worker"])
    common = {
        "ENVIRONMENT",
        "LOG_LEVEL",
        "POWERTOOLS_SERVICE_NAME",
        "POWERTOOLS_METRICS_NAMESPACE",
        "POWERTOOLS_TRACE_DISABLED",
        "DATABASE_HOST",
        "DATABASE_PORT",
        "DATABASE_NAME",
        "DATABASE_SSLMODE",
        "DATABASE_AUTH",
        "DATABASE_USER",
        "SENDER_EMAIL",
        "DD_TRACE_ENABLED",
    }

    assert set(api) == common | {"PORT", "CORS_ALLOWED_ORIGINS"}
    assert set(worker) == common | {
        "TASK_QUEUE_URL",
        "RESULT_QUEUE_URL",
        "FEEDBACK_QUEUE_URL",
        "SES_MAX_SEND_RATE",
        "MESSAGE_RETENTION_DAYS",
    }
    assert worker["MESSAGE_RETENTION_DAYS"] == {"Ref": "MessageRetentionDays"}
    assert (api["POWERTOOLS_SERVICE_NAME"], worker["POWERTOOLS_SERVICE_NAME"]) == (
        "herald-api",
        "herald-worker",
    )
    assert worker["TASK_QUEUE_URL"] == {"Ref": "TaskQueueUrl"}
    assert worker["RESULT_QUEUE_URL"] == {"Ref": "ResultQueueUrl"}
    assert worker["FEEDBACK_QUEUE_URL"] == {"Ref": "FeedbackQueueUrl"}
    assert worker["SES_MAX_SEND_RATE"] == {"Ref": "SesMaxSendRate"}
    assert str(api["PORT"]) == "8000"


@pytest.mark.parametrize(("name", "seconds"), sorted(STOP_TIMEOUTS.items()))
def test_stop_timeout_outlasts_the_graceful_shutdown(
    backend: Template, name: str, seconds: int
) -> None:
    assert container_definitions(backend)[name]["StopTimeout"] == seconds


def test_every_container_logs_to_its_own_log_group_of_this_stack(backend: Template) -> None:
    groups = set()
    for name, container in container_definitions(backend).items():
        options = container["LogConfiguration"]["Options"]
        assert container["LogConfiguration"]["LogDriver"] == "awslogs", name
        groups.add(str(referenced_id(options["awslogs-group"])))

    assert groups == set(resources_of_type(backend, "AWS::Logs::LogGroup"))


# ----------------------------------------------------------------------------- IAM


def role_statements(backend: Template, role_id: str) -> dict[str, Any]:
    """A role's statements: its inline policies' and its managed policies' of this stack."""
    attached = {
        str(referenced_id(arn)) for arn in properties(backend, role_id).get("ManagedPolicyArns", [])
    }
    return {
        statement.sid: statement
        for statement in policy_statements(backend)
        if statement.owner == role_id or statement.owner in attached
    }


def grants(backend: Template, role_id: str) -> set[tuple[str, str]]:
    """Every (action, resource) a role is allowed, the resource as the logical ID it names
    (or as written, when it names none)."""
    return {
        (action, str(referenced_id(resource) or resource))
        for statement in role_statements(backend, role_id).values()
        if statement.allows
        for action in statement.actions
        for resource in statement.resources
    }


DATABASE_SECRET_GRANTS = {
    ("secretsmanager:GetSecretValue", "DatabaseSecretArn"),
    ("kms:Decrypt", "DatabaseKeyArn"),
}
# IAM database authentication as herald_app on this instance, and as no other user.
HERALD_APP_DBUSER = (
    "{'Fn::Sub': 'arn:${AWS::Partition}:rds-db:${AWS::Region}:${AWS::AccountId}"
    ":dbuser:${DatabaseResourceId}/herald_app'}"
)
DATABASE_CONNECT_GRANTS = {("rds-db:connect", HERALD_APP_DBUSER)}


def test_every_task_has_its_own_task_role(backend: Template) -> None:
    roles = {
        properties(backend, task_id)["ContainerDefinitions"][0]["Name"]: properties(
            backend, task_id
        ).get("TaskRoleArn")
        for task_id in resources_of_type(backend, "AWS::ECS::TaskDefinition")
    }

    assert roles == {name: {"Fn::GetAtt": [role, "Arn"]} for name, role in TASK_ROLES.items()}


def test_api_may_only_connect_to_the_database_as_herald_app(backend: Template) -> None:
    assert grants(backend, TASK_ROLES["api"]) == DATABASE_CONNECT_GRANTS


TENANT_SECRETS = (
    "{'Fn::Sub': 'arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}"
    ":secret:herald/${Environment}/tenants/*'}"
)
RDS_MANAGED_SECRETS = (
    "{'Fn::Sub': 'arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}"
    ":secret:rds!db-*'}"
)


def test_migration_may_read_the_database_secret_the_drill_s_and_create_tenant_secrets(
    backend: Template,
) -> None:
    # The one-off tasks run on the migration's role: the restore drill's check reads its
    # temporary instance's RDS-managed secret; bootstrap-tenant creates (and, if its commit
    # fails, deletes) a secret under herald/<env>/tenants/, encrypted with the database key
    assert grants(backend, TASK_ROLES["migrate"]) == DATABASE_SECRET_GRANTS | {
        ("secretsmanager:GetSecretValue", RDS_MANAGED_SECRETS),
        ("secretsmanager:CreateSecret", TENANT_SECRETS),
        ("secretsmanager:TagResource", TENANT_SECRETS),
        ("secretsmanager:DeleteSecret", TENANT_SECRETS),
        ("kms:GenerateDataKey", "DatabaseKeyArn"),
    }
    drill = role_statements(backend, TASK_ROLES["migrate"])["ReadTheRestoreDrillSecret"]
    assert drill.statement["Condition"] == {
        "StringLike": {
            "secretsmanager:ResourceTag/aws:rds:primaryDBInstanceArn": {
                "Fn::Sub": "arn:${AWS::Partition}:rds:${AWS::Region}:${AWS::AccountId}"
                ":db:herald-${Environment}-*-restore-drill"
            }
        }
    }
    encrypt = role_statements(backend, TASK_ROLES["migrate"])["EncryptTenantKeySecrets"]
    assert encrypt.statement["Condition"] == {
        "StringEquals": {
            "kms:ViaService": {"Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"}
        }
    }


def test_worker_may_use_exactly_its_queues_the_pipeline_key_ses_account_and_the_database(
    backend: Template,
) -> None:
    assert grants(backend, "WorkerTaskRole") == DATABASE_CONNECT_GRANTS | {
        ("sqs:SendMessage", "TaskQueueArn"),
        ("sqs:GetQueueAttributes", "TaskQueueArn"),
        ("sqs:ReceiveMessage", "ResultQueueArn"),
        ("sqs:DeleteMessage", "ResultQueueArn"),
        ("sqs:ChangeMessageVisibility", "ResultQueueArn"),
        ("sqs:GetQueueAttributes", "ResultQueueArn"),
        ("sqs:ReceiveMessage", "FeedbackQueueArn"),
        ("sqs:DeleteMessage", "FeedbackQueueArn"),
        ("sqs:ChangeMessageVisibility", "FeedbackQueueArn"),
        ("sqs:GetQueueAttributes", "FeedbackQueueArn"),
        ("kms:GenerateDataKey", "PipelineKeyArn"),
        ("kms:Decrypt", "PipelineKeyArn"),
        # GetAccount has no resource type: the account's own sending quota
        ("ses:GetAccount", "*"),
    }


def test_only_the_migration_task_may_read_the_database_secret(backend: Template) -> None:
    # Given every statement that names the database secret or its key, but the migration
    # role's tenant-secret policy (the test above: encrypting new secrets under tenants/*)
    readers = [
        statement
        for statement in policy_statements(backend)
        if {"DatabaseSecretArn", "DatabaseKeyArn"}
        & {str(referenced_id(resource)) for resource in statement.resources}
        and statement.owner != "TenantBootstrapPolicy"
    ]
    [policy_id] = {statement.owner for statement in readers}
    holders = {
        role_id
        for role_id in resources_of_type(backend, "AWS::IAM::Role")
        if {"Ref": policy_id} in properties(backend, role_id).get("ManagedPolicyArns", [])
    }

    # Then one managed policy holds them, attached to the migration's role alone (the api
    # and worker connect with IAM tokens: DatabaseConnectPolicy, theirs alone); the only
    # other managed policy is the worker's own, attached to the worker's role alone
    assert holders == {"MigrationTaskRole"}
    assert set(resources_of_type(backend, "AWS::IAM::ManagedPolicy")) == {
        policy_id,
        "DatabaseConnectPolicy",
        "WorkerPolicy",
        "RestoreDrillSecretReadPolicy",
        "TenantBootstrapPolicy",
    }
    assert {
        role_id
        for role_id in resources_of_type(backend, "AWS::IAM::Role")
        if {"Ref": "DatabaseConnectPolicy"}
        in properties(backend, role_id).get("ManagedPolicyArns", [])
    } == {"ApiTaskRole", "WorkerTaskRole"}
    for migration_only in ("RestoreDrillSecretReadPolicy", "TenantBootstrapPolicy"):
        assert {
            role_id
            for role_id in resources_of_type(backend, "AWS::IAM::Role")
            if {"Ref": migration_only} in properties(backend, role_id).get("ManagedPolicyArns", [])
        } == {"MigrationTaskRole"}
    assert "Roles" not in properties(backend, policy_id)
    assert "Roles" not in properties(backend, "WorkerPolicy")
    assert {
        role_id
        for role_id in resources_of_type(backend, "AWS::IAM::Role")
        if {"Ref": "WorkerPolicy"} in properties(backend, role_id).get("ManagedPolicyArns", [])
    } == {"WorkerTaskRole"}
    # And it reads exactly that secret, and decrypts with the key only through Secrets Manager
    statements = {statement.sid: statement for statement in readers}
    secret, decrypt = statements["ReadTheDatabaseSecret"], statements["DecryptTheDatabaseSecret"]
    assert secret.actions == ["secretsmanager:GetSecretValue"]
    assert secret.resources == [{"Ref": "DatabaseSecretArn"}]
    assert decrypt.actions == ["kms:Decrypt"]
    assert decrypt.resources == [{"Ref": "DatabaseKeyArn"}]
    assert decrypt.statement["Condition"] == {
        "StringEquals": {
            "kms:ViaService": {"Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"}
        }
    }


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_execution_role_only_pulls_the_image_and_writes_its_own_logs(
    backend: Template, name: str
) -> None:
    # Given the execution role of one process's tasks, and the log group its container
    # writes to (ECS reads no secret at start-up any more: the role has no reason to)
    [task_id] = [
        task_id
        for task_id in resources_of_type(backend, "AWS::ECS::TaskDefinition")
        if properties(backend, task_id)["ContainerDefinitions"][0]["Name"] == name
    ]
    role_id = str(referenced_id(properties(backend, task_id)["ExecutionRoleArn"]))
    statements = role_statements(backend, role_id)
    actions = {action for statement in statements.values() for action in statement.actions}
    log_group = container_definitions(backend)[name]["LogConfiguration"]["Options"]["awslogs-group"]

    # Then it pulls the image and writes exactly that log group

    assert actions == {
        "ecr:GetAuthorizationToken",
        "ecr:BatchCheckLayerAvailability",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchGetImage",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }
    assert statements["WriteContainerLogs"].resources == [
        {"Fn::GetAtt": [referenced_id(log_group), "Arn"]}
    ]
    assert "ManagedPolicyArns" not in properties(backend, role_id)


def test_tasks_reach_the_database_only_on_5432(backend: Template) -> None:
    egress = {
        str(referenced_id(rule["GroupId"])): rule
        for rule_id in resources_of_type(backend, "AWS::EC2::SecurityGroupEgress")
        if (rule := properties(backend, rule_id))
    }

    assert set(egress) == {
        "ApiSecurityGroupId",
        "WorkerSecurityGroupId",
        "MigrationSecurityGroupId",
    }
    for rule in egress.values():
        assert rule["DestinationSecurityGroupId"] == {"Ref": "DatabaseSecurityGroupId"}
        assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 5432, 5432)


def test_cluster_has_container_insights(backend: Template) -> None:
    [cluster_id] = resources_of_type(backend, "AWS::ECS::Cluster")
    settings = properties(backend, cluster_id)["ClusterSettings"]

    assert {"Name": "containerInsights", "Value": "enabled"} in settings or {
        "Name": "containerInsights",
        "Value": "enhanced",
    } in settings


def test_migration_is_a_one_off_task_definition_the_outputs_name(backend: Template) -> None:
    # Given the migration's instance of the process template
    task = properties(backend, "MigrationTaskDefinition")

    # Then it is a small task definition and no service, and the output the release's
    # `aws ecs run-task` reads names it
    assert "MigrationService" not in backend["Resources"]
    assert (str(task["Cpu"]), str(task["Memory"])) == ("256", "512")
    assert backend["Outputs"]["MigrationTaskDefinitionArn"]["Value"] == {
        "Ref": "MigrationTaskDefinition"
    }


@pytest.mark.parametrize(
    ("name", "service_id"), [("api", "ApiService"), ("worker", "WorkerService")]
)
def test_outputs_name_the_services_and_log_groups_the_tools_read(
    backend: Template, name: str, service_id: str
) -> None:
    # Given the backend's outputs (template.yaml, herald-deploy and the docs read them)
    outputs = backend["Outputs"]
    prefix = service_id.removesuffix("Service")

    # Then each names the process's own resource, as before the processes were nested
    assert outputs[f"{prefix}ServiceName"]["Value"] == {"Fn::GetAtt": [service_id, "Name"]}
    assert outputs[f"{prefix}LogGroupName"]["Value"] == {"Ref": f"{prefix}LogGroup"}
    assert properties(backend, f"{prefix}LogGroup")["LogGroupName"] == {
        "Fn::Sub": f"/herald/${{AWS::StackName}}/{name}"
    }
