"""template.yaml wires its nested stacks Outputs -> Parameters, and `sam build` carries them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.conftest import (
    NESTED_STACKS,
    ROOT_PARTS,
    SERVICE_TEMPLATES,
    SamBuild,
    Template,
    load_template,
    nested_stack_parameters,
    properties,
    referenced_id,
    resources_of_type,
)

ROOT_NESTS = {**NESTED_STACKS, **ROOT_PARTS}
NESTED = {logical_id: load_template(path) for logical_id, path in ROOT_NESTS.items()}
BACKEND = NESTED["BackendStack"]
SERVICE = {logical_id: load_template(path) for logical_id, path in SERVICE_TEMPLATES.items()}


def nested_output_reads(value: Any) -> list[tuple[str, str]]:
    """Every (nested stack, output) a value reads with !GetAtt Stack.Outputs.Name."""
    if isinstance(value, dict):
        if "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            parts = target if isinstance(target, list) else target.split(".", 1)
            logical_id, attribute = str(parts[0]), str(parts[1])
            if attribute.startswith("Outputs."):
                return [(logical_id, attribute.removeprefix("Outputs."))]
            return []
        return [read for item in value.values() for read in nested_output_reads(item)]
    if isinstance(value, list):
        return [read for item in value for read in nested_output_reads(item)]
    return []


def test_template_nests_exactly_its_stacks_from_local_files(root_template: Template) -> None:
    # Given the root template's applications
    applications = resources_of_type(root_template, "AWS::Serverless::Application")

    # Then each nested stack is a local file under stacks/, which `sam build` packages
    assert {
        logical_id: properties(root_template, logical_id)["Location"] for logical_id in applications
    } == {logical_id: f"stacks/{path.name}" for logical_id, path in ROOT_NESTS.items()}


@pytest.mark.parametrize("stack_id", sorted(ROOT_NESTS))
def test_template_passes_every_required_parameter_and_no_unknown_one(
    root_template: Template, stack_id: str
) -> None:
    # Given what template.yaml passes and what the nested template declares
    passed = set(nested_stack_parameters(root_template, stack_id))
    declared = NESTED[stack_id]["Parameters"]
    required = {name for name, parameter in declared.items() if "Default" not in parameter}

    # Then nothing the nested stack needs is missing, and nothing passed is unknown to it
    assert required - passed == set(), f"{stack_id}: missing"
    assert passed - set(declared) == set(), f"{stack_id}: unknown"


def test_every_nested_output_the_root_reads_exists(root_template: Template) -> None:
    # Given every !GetAtt Stack.Outputs.Name in the root template (resources and outputs)
    reads = nested_output_reads(root_template["Resources"]) + nested_output_reads(
        root_template["Outputs"]
    )
    assert reads

    # Then the nested template declares that output
    for stack_id, output in reads:
        assert output in NESTED[stack_id].get("Outputs", {}), f"{stack_id}.Outputs.{output}"


def test_stacks_are_created_in_dependency_order(root_template: Template) -> None:
    # Given which nested stacks each one reads outputs of
    reads = {
        stack_id: {
            read
            for read, _ in nested_output_reads(nested_stack_parameters(root_template, stack_id))
        }
        for stack_id in ROOT_NESTS
    }

    # Then the network, the queues and the site come first, SES's events need the feedback
    # queue, the database needs the network's, the backend those and the queues (the site's
    # origin is the one its CORS allows), the dashboard last (it shows the queues', SES's,
    # the database's and the ALB's metrics)
    queues = {"TaskStack", "ResultStack", "FeedbackStack"}
    assert reads == {
        "NetworkStack": set(),
        "TaskStack": set(),
        "ResultStack": set(),
        "FeedbackStack": set(),
        "SesStack": {"FeedbackStack"},
        "DatabaseStack": {"NetworkStack"},
        "BackendStack": {"NetworkStack", "DatabaseStack", "SiteStack", *queues},
        "SiteStack": set(),
        "DashboardStack": {"DatabaseStack", "BackendStack", "SesStack", *queues},
    }


def test_backend_gets_the_root_queues_and_key(template: Template) -> None:
    parameters = nested_stack_parameters(template, "BackendStack")

    assert parameters["TaskQueueUrl"] == {"Ref": "TaskQueue"}
    assert parameters["TaskQueueArn"] == {"Fn::GetAtt": ["TaskQueue", "Arn"]}
    assert parameters["ResultQueueUrl"] == {"Ref": "ResultQueue"}
    assert parameters["ResultQueueArn"] == {"Fn::GetAtt": ["ResultQueue", "Arn"]}
    assert parameters["PipelineKeyArn"] == {"Fn::GetAtt": ["PipelineKey", "Arn"]}
    assert parameters["SenderEmail"] == {"Ref": "SenderEmail"}
    assert parameters["ImageUri"] == {"Ref": "BackendImageUri"}
    assert parameters["FeedbackQueueUrl"] == {"Ref": "FeedbackQueue"}
    assert parameters["FeedbackQueueArn"] == {"Fn::GetAtt": ["FeedbackQueue", "Arn"]}
    assert parameters["SesMaxSendRate"] == {"Ref": "SesMaxSendRate"}


def test_backend_nests_one_service_template_per_process() -> None:
    # Given the backend's nested stacks
    stacks = resources_of_type(BACKEND, "AWS::CloudFormation::Stack")

    # Then the api, the worker and the migration are each stacks/service.yaml, a local file
    # beside it that `sam build` packages, and no task definition, log group or role of a
    # process is written in the backend itself
    assert {
        logical_id: properties(BACKEND, logical_id)["TemplateURL"] for logical_id in stacks
    } == {logical_id: path.name for logical_id, path in SERVICE_TEMPLATES.items()}
    for resource_type in ("AWS::ECS::TaskDefinition", "AWS::ECS::Service", "AWS::Logs::LogGroup"):
        assert resources_of_type(BACKEND, resource_type) == {}, resource_type
    assert resources_of_type(BACKEND, "AWS::IAM::Role") == {}


@pytest.mark.parametrize("stack_id", sorted(SERVICE_TEMPLATES))
def test_backend_passes_each_process_every_required_parameter_and_no_unknown_one(
    stack_id: str,
) -> None:
    # Given what the backend passes one process and what stacks/service.yaml declares
    passed = set(nested_stack_parameters(BACKEND, stack_id))
    declared = SERVICE[stack_id]["Parameters"]
    required = {name for name, parameter in declared.items() if "Default" not in parameter}

    # Then nothing the process needs is missing, and nothing passed is unknown to it
    assert required - passed == set(), f"{stack_id}: missing"
    assert passed - set(declared) == set(), f"{stack_id}: unknown"


def test_every_output_the_backend_reads_of_a_process_exists() -> None:
    # Given every !GetAtt Process.Outputs.Name in the backend (resources and outputs)
    reads = nested_output_reads(BACKEND["Resources"]) + nested_output_reads(BACKEND["Outputs"])
    assert {stack_id for stack_id, _ in reads} == set(SERVICE_TEMPLATES)

    # Then stacks/service.yaml declares that output, and the migration, which runs no
    # service, is never asked for its service's name
    for stack_id, output in reads:
        assert output in SERVICE[stack_id]["Outputs"], f"{stack_id}.Outputs.{output}"
        assert (stack_id, output) != ("MigrationStack", "ServiceName")


def test_outputs_say_where_the_api_is_and_how_to_run_the_migration(template: Template) -> None:
    # Given the root template's outputs
    outputs = template["Outputs"]

    # Then a person (or the pipeline) finds the API and everything `aws ecs run-task` needs
    assert outputs["ApiUrl"]["Value"] == {"Fn::Sub": "https://${ApiDomainName}"}
    wanted = {
        "LoadBalancerDnsName": ("BackendStack", "LoadBalancerDnsName"),
        "ClusterName": ("BackendStack", "ClusterName"),
        "ApiServiceName": ("BackendStack", "ApiServiceName"),
        "WorkerServiceName": ("BackendStack", "WorkerServiceName"),
        "MigrationTaskDefinitionArn": ("BackendStack", "MigrationTaskDefinitionArn"),
        "PrivateSubnetIds": ("NetworkStack", "PrivateSubnetIds"),
        "MigrationSecurityGroupId": ("NetworkStack", "MigrationSecurityGroupId"),
        "DatabaseEndpoint": ("DatabaseStack", "DatabaseEndpointAddress"),
        "DatabaseSecretArn": ("DatabaseStack", "DatabaseSecretArn"),
    }
    for name, read in wanted.items():
        assert nested_output_reads(outputs[name]["Value"]) == [read], name


def test_peering_routes_go_to_the_app_vpcs_private_route_tables(
    template: Template, network: Template
) -> None:
    # Given the route tables the database stack adds its peering routes to
    parameters = nested_stack_parameters(template, "DatabaseStack")
    outputs = network["Outputs"]
    given = {
        str(referenced_id(outputs[output]["Value"]))
        for _, output in nested_output_reads(
            [parameters["AppPrivateRouteTableAId"], parameters["AppPrivateRouteTableBId"]]
        )
    }

    # Then they are exactly the tables of the app VPC's private subnets
    private_tables = {
        str(referenced_id(properties(network, association)["RouteTableId"]))
        for association in resources_of_type(network, "AWS::EC2::SubnetRouteTableAssociation")
        if str(referenced_id(properties(network, association)["SubnetId"])).startswith("Private")
    }
    assert given == private_tables == {"PrivateRouteTableA", "PrivateRouteTableB"}


def test_database_admits_exactly_the_tasks_security_groups(
    template: Template, network: Template
) -> None:
    parameters = nested_stack_parameters(template, "DatabaseStack")
    outputs = network["Outputs"]

    for parameter, group in {
        "ApiSecurityGroupId": "ApiSecurityGroup",
        "WorkerSecurityGroupId": "WorkerSecurityGroup",
        "MigrationSecurityGroupId": "MigrationSecurityGroup",
    }.items():
        [(_, output)] = nested_output_reads(parameters[parameter])
        assert referenced_id(outputs[output]["Value"]) == group


def test_sam_build_carries_the_nested_stacks(sam_build: SamBuild) -> None:
    # Given the session's `sam build` of the whole application (offline, no Docker)
    built = load_template(sam_build.build_dir / "template.yaml")

    # Then each nested template sits in the build folder and the built template points at it
    for stack_id, source in NESTED_STACKS.items():
        location = properties(built, stack_id)["Location"]
        assert location == f"{stack_id}/template.yaml"
        copied = load_template(sam_build.build_dir / location)
        assert set(copied["Resources"]) == set(load_template(source)["Resources"]), stack_id
    # And so does each process's stacks/service.yaml, nested in the built backend in turn
    backend_dir = sam_build.build_dir / "BackendStack"
    built_backend = load_template(backend_dir / "template.yaml")
    for stack_id, source in SERVICE_TEMPLATES.items():
        location = properties(built_backend, stack_id)["TemplateURL"]
        assert location == f"{stack_id}/template.yaml"
        copied = load_template(backend_dir / location)
        assert set(copied["Resources"]) == set(load_template(source)["Resources"]), stack_id
