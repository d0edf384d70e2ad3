"""stacks/pipeline.yaml keeps its promises: released only from main, prod only after an
approval, images immutable and scanned, artifacts encrypted and TLS-only, failures
announced, and every wildcard in a policy explained beside it."""

from __future__ import annotations

import json
import re

import pytest

from tests.infra.conftest import (
    STACKS_DIR,
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


def stages(pipeline: Template) -> dict[str, list[dict[str, object]]]:
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
    [staging] = by_stage["DeployStaging"]
    assert '"value": "staging"' in staging["Configuration"]["EnvironmentVariables"]
    assert all(a["ActionTypeId"]["Category"] != "Approval" for a in by_stage["DeployStaging"])


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
