"""docs/cost.md counts what the templates declare: a resource type added to or removed from
a template changes a number the cost page states, and this test fails until the page says so.

The environment is template.yaml with every stack it nests inlined (tools/nested_stacks.py:
stacks/service.yaml once per process, its service only where it runs as one); the pipeline
is stacks/pipeline.yaml. A resource declared under a condition counts (the page's table
names the condition); one a nested stack's passed values switch off does not.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from tests.conftest import REPO_ROOT
from tests.infra.conftest import STACKS_DIR, load_template
from tools.nested_stacks import inline_nested

if TYPE_CHECKING:
    from pathlib import Path

COST_DOC = REPO_ROOT / "docs" / "cost.md"
# The types with a price of their own, or that decide one (a NAT gateway per AZ, an
# address per NAT gateway, a log group's ingestion and storage).
COUNTED_TYPES = {
    "environment": [
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        "AWS::Budgets::Budget",
        "AWS::CloudFront::Distribution",
        "AWS::CloudWatch::Alarm",
        "AWS::CloudWatch::Dashboard",
        "AWS::DynamoDB::Table",
        "AWS::EC2::EIP",
        "AWS::EC2::FlowLog",
        "AWS::EC2::NatGateway",
        "AWS::EC2::VPC",
        "AWS::EC2::VPCEndpoint",
        "AWS::EC2::VPCPeeringConnection",
        "AWS::ECS::Service",
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        "AWS::Events::Rule",
        "AWS::KMS::Key",
        "AWS::Logs::LogGroup",
        "AWS::RDS::DBInstance",
        "AWS::S3::Bucket",
        "AWS::SES::ConfigurationSet",
        "AWS::SNS::Topic",
        "AWS::SQS::Queue",
        "AWS::Serverless::Function",
    ],
    "pipeline": [
        "AWS::CodeBuild::Project",
        "AWS::CodePipeline::Pipeline",
        "AWS::ECR::Repository",
        "AWS::KMS::Key",
        "AWS::Logs::LogGroup",
        "AWS::S3::Bucket",
    ],
}
# A row of the page's "Resources the templates declare" tables: | `AWS::X::Y` | 3 | ...
ROW = re.compile(r"^\| `(AWS::[A-Za-z0-9]+::[A-Za-z0-9]+)` \| (\d+) \|", re.MULTILINE)


def declared(path: Path) -> Counter[str]:
    template = inline_nested(load_template(path), path, load_template)
    return Counter(resource["Type"] for resource in template["Resources"].values())


def stated(section: str) -> dict[str, int]:
    """The counts under the page's heading `### <section>` (up to the next heading)."""
    text = COST_DOC.read_text(encoding="utf-8")
    match = re.search(rf"^### {re.escape(section)}\n(.*?)(?=^#)", text, re.MULTILINE | re.DOTALL)
    assert match, f"docs/cost.md has no '### {section}' section"
    return {kind: int(count) for kind, count in ROW.findall(match.group(1))}


COUNTED = {
    "environment": declared(REPO_ROOT / "template.yaml"),
    "pipeline": declared(STACKS_DIR / "pipeline.yaml"),
}
SECTIONS = {"environment": "One environment", "pipeline": "The pipeline stack"}


@pytest.mark.parametrize(
    ("stack", "resource_type"),
    [(stack, kind) for stack, kinds in COUNTED_TYPES.items() for kind in kinds],
)
def test_the_cost_page_states_how_many_of_each_counted_type_the_templates_declare(
    stack: str, resource_type: str
) -> None:
    # Given the page's table for this stack and the templates' resources
    page = stated(SECTIONS[stack])

    # Then the page's number is the templates' number
    assert page.get(resource_type) == COUNTED[stack][resource_type], (
        f"docs/cost.md, '{SECTIONS[stack]}': {resource_type} is {page.get(resource_type)}, "
        f"the templates declare {COUNTED[stack][resource_type]}"
    )


@pytest.mark.parametrize("stack", sorted(COUNTED_TYPES))
def test_the_cost_page_counts_no_type_the_test_does_not_check(stack: str) -> None:
    assert set(stated(SECTIONS[stack])) == set(COUNTED_TYPES[stack])


def test_the_fixed_cost_table_prices_every_alarm_and_key_the_environment_declares() -> None:
    # Given the fixed monthly cost table's alarm and key rows
    text = COST_DOC.read_text(encoding="utf-8")
    alarms = re.search(r"CloudWatch alarms: (\d+)", text)
    keys = re.search(r"KMS keys: (\d+)", text)

    # Then they price as many as the environment declares
    assert alarms and int(alarms.group(1)) == COUNTED["environment"]["AWS::CloudWatch::Alarm"]
    assert keys and int(keys.group(1)) == COUNTED["environment"]["AWS::KMS::Key"]
