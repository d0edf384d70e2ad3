"""stacks/pipeline.yaml keeps its promises: released only from main, prod only after an
approval, images immutable and scanned, artifacts encrypted and TLS-only, failures
announced, and every wildcard in a policy explained beside it."""

from __future__ import annotations

import json
import re
from fnmatch import fnmatch
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.infra.conftest import (
    STACKS_DIR,
    PolicyStatement,
    Template,
    load_template,
    policy_statements,
    properties,
    referenced_id,
    resources_of_type,
)

PIPELINE_PATH = STACKS_DIR / "pipeline.yaml"


@pytest.fixture(scope="module")
def pipeline() -> Template:
    return load_template(PIPELINE_PATH)


def stages(pipeline: Template) -> dict[str, list[dict[str, Any]]]:
    return {stage["Name"]: stage["Actions"] for stage in properties(pipeline, "Pipeline")["Stages"]}


def test_the_pipeline_is_v2_and_runs_on_a_push_to_the_branch_parameter(pipeline: Template) -> None:
    props = properties(pipeline, "Pipeline")

    assert props["PipelineType"] == "V2"
    assert pipeline["Parameters"]["BranchName"]["Default"] == "main"
    [trigger] = props["Triggers"]
    assert trigger["ProviderType"] == "CodeStarSourceConnection"
    assert trigger["GitConfiguration"]["SourceActionName"] == "Source"
    assert trigger["GitConfiguration"]["Push"] == [
        {"Branches": {"Includes": [{"Ref": "BranchName"}]}}
    ]
    [source] = stages(pipeline)["Source"]
    assert source["ActionTypeId"]["Provider"] == "CodeStarSourceConnection"
    assert source["Configuration"]["BranchName"] == {"Ref": "BranchName"}


def test_stages_test_then_deploy_staging_then_approve_before_prod(pipeline: Template) -> None:
    by_stage = stages(pipeline)

    assert list(by_stage) == ["Source", "TestAndBuild", "DeployStaging", "DeployProd"]
    approve, deploy = sorted(by_stage["DeployProd"], key=lambda a: a["RunOrder"])
    assert approve["ActionTypeId"]["Category"] == "Approval"
    assert approve["ActionTypeId"]["Provider"] == "Manual"
    assert '"value": "prod"' in deploy["Configuration"]["EnvironmentVariables"]
    staging, smoke = sorted(by_stage["DeployStaging"], key=lambda a: a["RunOrder"])
    assert '"value": "staging"' in staging["Configuration"]["EnvironmentVariables"]
    assert all(a["ActionTypeId"]["Category"] != "Approval" for a in by_stage["DeployStaging"])
    # The smoke test runs on staging after its deploy, so before prod's approval
    assert staging["RunOrder"] < smoke["RunOrder"]
    variables = json.loads(smoke["Configuration"]["EnvironmentVariables"])
    assert {"name": "PIPELINE_STEP", "value": "smoke", "type": "PLAINTEXT"} in variables
    assert {"name": "DEPLOY_ENV", "value": "staging", "type": "PLAINTEXT"} in variables


def test_the_image_repository_is_immutable_scanned_encrypted_and_pruned(
    pipeline: Template,
) -> None:
    props = properties(pipeline, "ImageRepository")

    assert props["ImageTagMutability"] == "IMMUTABLE"
    assert props["ImageScanningConfiguration"] == {"ScanOnPush": True}
    assert props["EncryptionConfiguration"]["EncryptionType"] == "KMS"
    assert referenced_id(props["EncryptionConfiguration"]["KmsKey"]) == "DeliveryKey"
    # A plain string, as Control Tower's CT.ECR.PR.1 reads it
    policy = json.loads(props["LifecyclePolicy"]["LifecyclePolicyText"])
    selections = [rule["selection"] for rule in policy["rules"]]
    assert selections[0]["tagStatus"] == "untagged"
    assert selections[1]["countType"] == "imageCountMoreThan"


def test_the_artifacts_bucket_is_kms_encrypted_private_and_tls_only(pipeline: Template) -> None:
    props = properties(pipeline, "ArtifactsBucket")
    [rule] = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]

    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert referenced_id(rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"]) == "DeliveryKey"
    assert all(props["PublicAccessBlockConfiguration"].values())
    store = properties(pipeline, "Pipeline")["ArtifactStore"]
    assert store["EncryptionKey"]["Type"] == "KMS"
    [deny] = [s for s in policy_statements(pipeline) if s.owner == "ArtifactsBucketPolicy"]
    assert deny.statement["Effect"] == "Deny"
    assert deny.statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_failed_runs_are_announced_on_the_alarm_topic(pipeline: Template) -> None:
    props = properties(pipeline, "FailedRunNotifications")

    assert "codepipeline-pipeline-pipeline-execution-failed" in props["EventTypeIds"]
    assert props["Targets"] == [{"TargetType": "SNS", "TargetAddress": {"Ref": "AlarmTopicArn"}}]
    assert "Pipeline" in props["Resource"]["Fn::Sub"]


def test_only_cloudformation_may_be_handed_the_broad_role(pipeline: Template) -> None:
    # Given every iam:PassRole grant of the stack
    passes = [s for s in policy_statements(pipeline) if "iam:PassRole" in s.actions]

    # Then each names the services it may be passed to
    for statement in passes:
        assert "iam:PassedToService" in statement.statement["Condition"]["StringEquals"], str(
            statement
        )
    [to_cloudformation] = [
        s for s in passes if referenced_id(s.resources[0]) == "CloudFormationExecutionRole"
    ]
    assert to_cloudformation.owner == "DeployBuildRole"


def test_every_wildcard_in_a_policy_has_its_reason_written_beside_it(pipeline: Template) -> None:
    # Given the template's text and its Allow statements with "*" in an action or resource
    lines = PIPELINE_PATH.read_text().splitlines()
    wildcards = [
        s
        for s in policy_statements(pipeline)
        if s.allows
        and (any("*" in a for a in s.actions) or "*" in s.resources)
        and s.owner_type != "AWS::S3::BucketPolicy"
    ]

    # Then a comment of at least a sentence stands right above each such statement
    assert wildcards
    for statement in wildcards:
        assert statement.sid, str(statement)
        [index] = [
            i for i, line in enumerate(lines) if re.fullmatch(rf"\s*- Sid: {statement.sid}", line)
        ]
        assert lines[index - 1].strip().startswith("#"), str(statement)
        comment = []
        for line in reversed(lines[:index]):
            if not line.strip().startswith("#"):
                break
            comment.append(line.strip(" #"))
        assert len(" ".join(comment)) >= 40, str(statement)


def test_the_build_roles_and_the_pipeline_role_trust_only_their_service_in_this_account(
    pipeline: Template,
) -> None:
    for role_id in resources_of_type(pipeline, "AWS::IAM::Role"):
        [statement] = properties(pipeline, role_id)["AssumeRolePolicyDocument"]["Statement"]
        assert set(statement["Principal"]) == {"Service"}, role_id
        assert statement["Condition"]["StringEquals"]["aws:SourceAccount"] == {
            "Ref": "AWS::AccountId"
        }


# ---------------------------------------------------------------- the boundary
ENVIRONMENT_TEMPLATES = [
    "template.yaml",
    "stacks/backend.yaml",
    "stacks/service.yaml",
    "stacks/database.yaml",
    "stacks/network.yaml",
    "stacks/site.yaml",
]
ROLE_POLICY_TYPES = {
    "AWS::IAM::Role",
    "AWS::IAM::Policy",
    "AWS::IAM::ManagedPolicy",
    "AWS::Serverless::Function",
}
BOUNDED_ACTIONS = {
    "iam:CreateRole",
    "iam:PutRolePolicy",
    "iam:AttachRolePolicy",
    "iam:PutRolePermissionsBoundary",
}


def cloudformation_role_statements(pipeline: Template) -> list[PolicyStatement]:
    return [s for s in policy_statements(pipeline) if s.owner == "CloudFormationExecutionRole"]


def test_the_boundary_allows_every_action_an_environment_roles_policy_allows(
    pipeline: Template,
) -> None:
    # Given what the boundary allows, and every action the environments' roles are granted
    ceiling = [
        action
        for s in policy_statements(pipeline)
        if s.owner == "HeraldPermissionsBoundary" and s.allows
        for action in s.actions
    ]
    granted = {
        (path, statement.owner, action)
        for path in ENVIRONMENT_TEMPLATES
        if (REPO_ROOT / path).exists()
        for statement in policy_statements(load_template(REPO_ROOT / path))
        if statement.owner_type in ROLE_POLICY_TYPES and statement.allows
        for action in statement.actions
    }

    # Then the boundary takes nothing away that a role was meant to have
    assert granted
    beyond = [g for g in granted if not any(fnmatch(g[2].lower(), c.lower()) for c in ceiling)]
    assert beyond == []


def test_the_boundary_denies_identity_and_account_management(pipeline: Template) -> None:
    [deny] = [
        s
        for s in policy_statements(pipeline)
        if s.owner == "HeraldPermissionsBoundary" and not s.allows
    ]
    allowed = [
        a
        for s in policy_statements(pipeline)
        if s.owner == "HeraldPermissionsBoundary" and s.allows
        for a in s.actions
    ]

    assert {"iam:*", "organizations:*", "account:*"} <= set(deny.actions)
    assert not [a for a in allowed if a.split(":")[0] in {"iam", "organizations", "sts"}]


def test_the_boundarys_arn_is_an_output_and_reaches_the_deploy(pipeline: Template) -> None:
    output = pipeline["Outputs"]["PermissionsBoundaryArn"]
    variables = {
        v["Name"]: v["Value"]
        for v in properties(pipeline, "DeployProject")["Environment"]["EnvironmentVariables"]
    }

    assert output["Value"] == {"Ref": "HeraldPermissionsBoundary"}
    assert "Export" in output
    assert variables["PERMISSIONS_BOUNDARY_ARN"] == {"Ref": "HeraldPermissionsBoundary"}


def test_cloudformation_creates_and_empowers_roles_only_with_the_boundary(
    pipeline: Template,
) -> None:
    # Given every Allow of the CloudFormation role naming a way to create or empower a role
    statements = [
        s
        for s in cloudformation_role_statements(pipeline)
        if s.allows and BOUNDED_ACTIONS & set(s.actions)
    ]

    # Then each holds the role to the boundary, all four ways are covered, and nothing
    # allows them by a wildcard
    assert {a for s in statements for a in s.actions} >= BOUNDED_ACTIONS
    for statement in statements:
        condition = statement.statement["Condition"]["StringEquals"]
        assert condition["iam:PermissionsBoundary"] == {"Ref": "HeraldPermissionsBoundary"}
    assert not [
        s
        for s in cloudformation_role_statements(pipeline)
        if s.allows and any(a in ("iam:*", "iam:Put*", "iam:Create*") for a in s.actions)
    ]


def test_cloudformation_may_never_remove_a_boundary(pipeline: Template) -> None:
    denied = {
        a for s in cloudformation_role_statements(pipeline) if not s.allows for a in s.actions
    }

    assert "iam:DeleteRolePermissionsBoundary" in denied


@pytest.mark.parametrize("service", ["kms", "secretsmanager", "sqs", "lambda"])
def test_cloudformation_holds_no_whole_service_on_every_resource(
    pipeline: Template, service: str
) -> None:
    # Then no Allow gives service:* with "*" as a resource
    assert not [
        str(s)
        for s in cloudformation_role_statements(pipeline)
        if s.allows and f"{service}:*" in s.actions and "*" in s.resources
    ]
