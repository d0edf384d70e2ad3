"""tools/nested_stacks.py reads a stack that nests a local template once per instance as
the stack written out by hand: what the infra tests and cfn-guard judge stacks/backend.yaml
by."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.infra.conftest import load_stack

if TYPE_CHECKING:
    from pathlib import Path

CHILD = """\
Parameters:
  Name: {Type: String, Description: the process}
  Port: {Type: Number, Default: 0, Description: its port}
  Secret: {Type: String, Default: "", Description: a switch}
Conditions:
  HasPort: !Not [!Equals [!Ref Port, "0"]]
  Switched: !Not [!Equals [!Ref Secret, ""]]
Resources:
  Group:
    Type: AWS::Logs::LogGroup
    Properties: {LogGroupName: !Sub "/x/${AWS::StackName}/${Name}"}
  Task:
    Type: AWS::ECS::TaskDefinition
    Properties:
      ContainerDefinitions:
        - Name: !Ref Name
          PortMappings: !If [HasPort, [{ContainerPort: !Ref Port}], !Ref AWS::NoValue]
          Environment:
            - !If [Switched, {Name: SECRET, Value: !Ref Secret}, !Ref AWS::NoValue]
          LogConfiguration: {Options: {awslogs-group: !Ref Group}}
  Service:
    Type: AWS::ECS::Service
    Condition: HasPort
    Properties: {TaskDefinition: !Ref Task}
Outputs:
  GroupName: {Value: !Ref Group}
"""
PARENT = """\
Parameters:
  Secret: {Type: String, Default: "", Description: a switch}
Resources:
  ApiStack:
    Type: AWS::CloudFormation::Stack
    Properties:
      TemplateURL: child.yaml
      Parameters: {Name: api, Port: 8000, Secret: !Ref Secret}
  MigrateStack:
    Type: AWS::CloudFormation::Stack
    Properties:
      TemplateURL: child.yaml
      Parameters: {Name: migrate}
Outputs:
  ApiGroup: {Value: !GetAtt ApiStack.Outputs.GroupName}
"""


def test_each_instance_is_inlined_with_the_values_it_passes(tmp_path: Path) -> None:
    # Given a stack nesting one template twice, with different values
    (tmp_path / "child.yaml").write_text(CHILD, encoding="utf-8")
    (tmp_path / "parent.yaml").write_text(PARENT, encoding="utf-8")

    # When it is read as one stack
    stack = load_stack(tmp_path / "parent.yaml")
    resources = stack["Resources"]

    # Then each instance's resources are there under its name, and the nested stacks are not
    assert set(resources) == {"ApiGroup", "ApiTask", "ApiService", "MigrateGroup", "MigrateTask"}
    # with the values passed, inside a !Sub too, and its own resources renamed
    api = resources["ApiTask"]["Properties"]["ContainerDefinitions"][0]
    assert api["Name"] == "api"
    assert api["LogConfiguration"]["Options"]["awslogs-group"] == {"Ref": "ApiGroup"}
    assert resources["MigrateGroup"]["Properties"]["LogGroupName"] == {
        "Fn::Sub": "/x/${AWS::StackName}/migrate"
    }
    # a condition the values decide is decided: the api has its port and its service, the
    # migration neither (and no Fn::If is left behind)
    assert api["PortMappings"] == [{"ContainerPort": 8000}]
    assert "Condition" not in resources["ApiService"]
    assert "PortMappings" not in resources["MigrateTask"]["Properties"]["ContainerDefinitions"][0]
    # a condition only the parent's parameter decides stays, under the parent's conditions;
    # the instance that passes nothing has it decided (off)
    assert api["Environment"] == [
        {
            "Fn::If": [
                "Switched",
                {"Name": "SECRET", "Value": {"Ref": "Secret"}},
                {"Ref": "AWS::NoValue"},
            ]
        }
    ]
    assert stack["Conditions"] == {
        "Switched": {"Fn::Not": [{"Fn::Equals": [{"Ref": "Secret"}, ""]}]}
    }
    migrate = resources["MigrateTask"]["Properties"]["ContainerDefinitions"][0]
    assert migrate["Environment"] == []
    # And the parent's reads of an instance's outputs are what the outputs hold
    assert stack["Outputs"]["ApiGroup"]["Value"] == {"Ref": "ApiGroup"}


QUEUE = """\
Resources:
  Queue: {Type: AWS::SQS::Queue}
Outputs:
  QueueArn: {Value: !GetAtt Queue.Arn}
"""
RULE = """\
Parameters:
  TargetArn: {Type: String, Description: where the rule sends}
Resources:
  Rule:
    Type: AWS::Events::Rule
    Properties: {Targets: [{Id: queue, Arn: !Ref TargetArn}]}
"""
RULE_STACK = """\
  RuleStack:
    Type: AWS::Serverless::Application
    Properties:
      Location: rule.yaml
      Parameters: {TargetArn: !GetAtt FeedbackStack.Outputs.QueueArn}
"""
QUEUE_STACK = """\
  FeedbackStack:
    Type: AWS::Serverless::Application
    Properties: {Location: queue.yaml}
"""


@pytest.mark.parametrize("queue_first", [True, False], ids=["queue-first", "rule-first"])
def test_a_nested_stack_reading_another_ones_output_gets_its_inlined_resource(
    tmp_path: Path, queue_first: bool
) -> None:
    # Given a root whose rule stack reads an output of the queue stack it nests (SesStack
    # reads FeedbackStack's QueueArn), declared before or after it
    (tmp_path / "queue.yaml").write_text(QUEUE, encoding="utf-8")
    (tmp_path / "rule.yaml").write_text(RULE, encoding="utf-8")
    stacks = [QUEUE_STACK, RULE_STACK] if queue_first else [RULE_STACK, QUEUE_STACK]
    (tmp_path / "root.yaml").write_text("Resources:\n" + "".join(stacks), encoding="utf-8")

    # When it is read as one stack
    resources = load_stack(tmp_path / "root.yaml")["Resources"]

    # Then the rule targets the queue itself, under its inlined name
    (target,) = resources["RuleRule"]["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["FeedbackQueue", "Arn"]}
