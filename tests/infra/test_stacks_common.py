"""Every nested stack keeps the same promises: keys rotate, logs expire and are encrypted,
only the ALB faces the internet, and IAM grants name their actions and resources."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.infra.conftest import (
    KMS_GRANTS_ONLY_FOR_AWS_SERVICES,
    NESTED_STACKS,
    SERVICE_TEMPLATES,
    STACKS_DIR,
    TEMPLATES,
    Template,
    as_list,
    ingress_rules,
    load_stack,
    load_template,
    policy_statements,
    properties,
    referenced_id,
    resources_of_type,
    template_id,
)

if TYPE_CHECKING:
    from pathlib import Path

# Each nested stack with the stacks it nests in turn inlined (the backend's three
# stacks/service.yaml): every promise below holds for the api, the worker and the migration.
STACKS = {stack_id: load_stack(path) for stack_id, path in NESTED_STACKS.items()}
PARAMETRIZE_STACKS = pytest.mark.parametrize("stack_id", sorted(STACKS))

OPEN_TO_ALL = {"0.0.0.0/0", "::/0"}
# The one security group the internet may reach, and why.
INTERNET_FACING_GROUPS = {("NetworkStack", "AlbSecurityGroup"): "the ALB: 443, and 80 to redirect"}
# The only actions an Allow statement may grant on Resource "*", and why.
STAR_RESOURCE_ALLOWLIST = {
    "ecr:GetAuthorizationToken": "an account-wide registry token: no resource-level permission",
    "ses:GetAccount": "the account's own SES settings (the worker's send rate): no resource type",
}
LOGS_KEY_ACTIONS = {
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:DescribeKey",
}


def sub_text(value: Any) -> str:
    """The template string of a !Sub (short or list form)."""
    sub = value["Fn::Sub"]
    return str(sub[0] if isinstance(sub, list) else sub)


@PARAMETRIZE_STACKS
def test_every_kms_key_rotates(stack_id: str) -> None:
    keys = resources_of_type(STACKS[stack_id], "AWS::KMS::Key")

    assert keys, f"{stack_id} encrypts with a key of its own"
    for key_id in keys:
        assert properties(STACKS[stack_id], key_id)["EnableKeyRotation"] is True, key_id


@pytest.mark.parametrize("template_path", TEMPLATES, ids=template_id)
def test_every_kms_key_lets_only_aws_services_create_grants(template_path: Path) -> None:
    # Given every KMS key of a template (root, nested or the pipeline)
    template = load_template(template_path)
    for key_id in resources_of_type(template, "AWS::KMS::Key"):
        statements = [s.statement for s in policy_statements(template) if s.owner == key_id]

        # Then its policy refuses a grant that is not an AWS service's for this account
        assert KMS_GRANTS_ONLY_FOR_AWS_SERVICES in statements, key_id


@PARAMETRIZE_STACKS
def test_key_policies_delegate_to_iam_and_let_logs_use_only_their_log_groups(
    stack_id: str,
) -> None:
    # Given each key policy's statements
    stack = STACKS[stack_id]
    for key_id in resources_of_type(stack, "AWS::KMS::Key"):
        every = [s for s in policy_statements(stack) if s.owner == key_id]
        statements = [s for s in every if s.allows]
        principals = [s.statement["Principal"] for s in statements]

        # Then the account root delegates to IAM, and the only service is CloudWatch Logs,
        # limited by the encryption context to the log groups named in this template; the
        # one statement that does not allow is the limit on grants
        assert principals[0] == {
            "AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
        }
        denies = [s.statement for s in every if not s.allows]
        assert denies == [KMS_GRANTS_ONLY_FOR_AWS_SERVICES], key_id
        for statement in statements[1:]:
            assert statement.statement["Principal"] == {
                "Service": {"Fn::Sub": "logs.${AWS::Region}.amazonaws.com"}
            }, str(statement)
            assert set(statement.actions) == LOGS_KEY_ACTIONS, str(statement)
            condition = statement.statement["Condition"]["ArnEquals"]
            arns = as_list(condition["kms:EncryptionContext:aws:logs:arn"])
            log_groups = {
                sub_text(properties(stack, log_group_id)["LogGroupName"])
                for log_group_id in resources_of_type(stack, "AWS::Logs::LogGroup")
                if referenced_id(properties(stack, log_group_id)["KmsKeyId"]) == key_id
            }
            prefix = "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:"
            assert {sub_text(arn).removeprefix(prefix) for arn in arns} == log_groups


@PARAMETRIZE_STACKS
def test_every_log_group_expires_and_is_encrypted_with_a_key_of_its_stack(stack_id: str) -> None:
    stack = STACKS[stack_id]
    log_groups = resources_of_type(stack, "AWS::Logs::LogGroup")

    assert log_groups
    for log_group_id in log_groups:
        log_group = properties(stack, log_group_id)
        assert log_group["RetentionInDays"] == {"Ref": "LogRetentionDays"}, log_group_id
        assert referenced_id(log_group["KmsKeyId"]) in resources_of_type(stack, "AWS::KMS::Key")


@PARAMETRIZE_STACKS
def test_only_the_alb_takes_traffic_from_the_whole_internet(stack_id: str) -> None:
    # Given every ingress rule of the stack
    for rule in ingress_rules(STACKS[stack_id]):
        # Then none admits 0.0.0.0/0 or ::/0, except on the ALB's security group
        if OPEN_TO_ALL & set(rule.cidrs):
            assert (stack_id, rule.group) in INTERNET_FACING_GROUPS, rule
            assert rule.rule["FromPort"] in (80, 443), rule


def test_the_alb_takes_exactly_https_and_http_from_the_internet(network: Template) -> None:
    rules = [rule for rule in ingress_rules(network) if rule.group == "AlbSecurityGroup"]

    assert sorted((rule.rule["FromPort"], rule.rule["ToPort"], *rule.cidrs) for rule in rules) == [
        (80, 80, "0.0.0.0/0"),
        (443, 443, "0.0.0.0/0"),
    ]


@PARAMETRIZE_STACKS
def test_every_security_group_rule_says_what_it_is_for(stack_id: str) -> None:
    stack = STACKS[stack_id]
    for group_id in resources_of_type(stack, "AWS::EC2::SecurityGroup"):
        group = properties(stack, group_id)
        for rule in group.get("SecurityGroupIngress", []) + group.get("SecurityGroupEgress", []):
            assert rule.get("Description"), f"{group_id}: {rule}"
    for resource_type in ("AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress"):
        for rule_id in resources_of_type(stack, resource_type):
            assert properties(stack, rule_id).get("Description"), rule_id


@PARAMETRIZE_STACKS
def test_no_egress_is_open_on_every_port(stack_id: str) -> None:
    stack = STACKS[stack_id]
    egress = [
        rule
        for group_id in resources_of_type(stack, "AWS::EC2::SecurityGroup")
        for rule in properties(stack, group_id).get("SecurityGroupEgress", [])
    ] + [
        properties(stack, rule_id)
        for rule_id in resources_of_type(stack, "AWS::EC2::SecurityGroupEgress")
    ]

    for rule in egress:
        assert str(rule["IpProtocol"]) != "-1", rule
        if rule.get("CidrIp") == "0.0.0.0/0":
            assert (rule["FromPort"], rule["ToPort"]) == (443, 443), rule


@PARAMETRIZE_STACKS
def test_no_allow_statement_grants_a_wildcard_action(stack_id: str) -> None:
    for statement in policy_statements(STACKS[stack_id]):
        if not statement.allows or statement.sid == "EnableIamPolicies":
            continue  # a key policy's delegation to IAM grants nothing by itself
        assert "NotAction" not in statement.statement, str(statement)
        assert not [action for action in statement.actions if "*" in action], str(statement)


@PARAMETRIZE_STACKS
def test_no_allow_statement_grants_on_any_resource_but_the_allowlisted(stack_id: str) -> None:
    for statement in policy_statements(STACKS[stack_id]):
        if not statement.allows or statement.owner_type == "AWS::KMS::Key":
            continue  # in a key policy, "*" means this key
        assert "NotResource" not in statement.statement, str(statement)
        if "*" in statement.resources:
            assert set(statement.actions) <= set(STAR_RESOURCE_ALLOWLIST), str(statement)


@PARAMETRIZE_STACKS
def test_service_roles_can_be_assumed_only_for_this_account(stack_id: str) -> None:
    # Given every role's trust policy
    stack = STACKS[stack_id]
    for role_id in resources_of_type(stack, "AWS::IAM::Role"):
        for statement in properties(stack, role_id)["AssumeRolePolicyDocument"]["Statement"]:
            # Then a service assumes it only on behalf of this account (no confused deputy)
            assert set(statement["Principal"]) == {"Service"}, role_id
            condition = statement["Condition"]["StringEquals"]
            assert condition["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}, role_id


# The nested stacks, and the templates they nest in turn (stacks/service.yaml), whose
# parameters the inlined view above no longer shows.
DOCUMENTED = {**STACKS, **{template_id(p): load_template(p) for p in SERVICE_TEMPLATES.values()}}


@pytest.mark.parametrize("stack_id", sorted(DOCUMENTED))
def test_every_parameter_and_output_says_what_it_is(stack_id: str) -> None:
    stack = DOCUMENTED[stack_id]
    for name, parameter in stack["Parameters"].items():
        assert len(str(parameter.get("Description", "")).strip()) >= 20, name
    for name, output in stack["Outputs"].items():
        assert str(output.get("Description", "")).strip(), name


# The permissions boundary (NUMBERS.md, issue 18): the same parameter, condition and
# property in every template of this directory that creates roles.
BOUNDED_TEMPLATES = ["service.yaml", "database.yaml", "network.yaml"]
BOUNDARY = {
    "Fn::If": [
        "HasPermissionsBoundary",
        {"Ref": "PermissionsBoundaryArn"},
        {"Ref": "AWS::NoValue"},
    ]
}


@pytest.mark.parametrize("name", BOUNDED_TEMPLATES)
def test_every_role_carries_the_pipelines_permissions_boundary_when_given(name: str) -> None:
    # Given a stack that creates roles
    template = load_template(STACKS_DIR / name)
    roles = resources_of_type(template, "AWS::IAM::Role")

    # Then each role takes the boundary from PermissionsBoundaryArn, empty meaning none
    assert roles
    for role_id in roles:
        assert properties(template, role_id)["PermissionsBoundary"] == BOUNDARY, role_id
    assert template["Parameters"]["PermissionsBoundaryArn"]["Default"] == ""
    assert template["Conditions"]["HasPermissionsBoundary"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "PermissionsBoundaryArn"}, ""]}]
    }


def test_the_backend_passes_the_boundary_to_every_service_stack() -> None:
    # Given the backend, which nests stacks/service.yaml once per process
    backend = load_template(STACKS_DIR / "backend.yaml")
    instances = resources_of_type(backend, "AWS::CloudFormation::Stack")

    # Then each instance gets the backend's own PermissionsBoundaryArn
    assert len(instances) == 3
    for stack_id in instances:
        parameters = properties(backend, stack_id)["Parameters"]
        assert parameters["PermissionsBoundaryArn"] == {"Ref": "PermissionsBoundaryArn"}, stack_id
