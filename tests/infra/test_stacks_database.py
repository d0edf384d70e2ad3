"""stacks/database.yaml: a private, peered VPC and an encrypted, TLS-only, protected PostgreSQL."""

from __future__ import annotations

import tomllib
from typing import Any

from tests.conftest import REPO_ROOT
from tests.infra.conftest import Template, properties, referenced_id, resources_of_type

APP_SECURITY_GROUP_PARAMETERS = {
    "ApiSecurityGroupId",
    "WorkerSecurityGroupId",
    "MigrationSecurityGroupId",
}


def database_instance(database: Template) -> dict[str, Any]:
    [instance_id] = resources_of_type(database, "AWS::RDS::DBInstance")
    return properties(database, instance_id)


def routes(database: Template) -> list[dict[str, Any]]:
    return [
        properties(database, route_id)
        for route_id in resources_of_type(database, "AWS::EC2::Route")
    ]


def test_database_vpc_has_no_way_to_the_internet(database: Template) -> None:
    # Given the database VPC's resources and routes
    for resource_type in (
        "AWS::EC2::InternetGateway",
        "AWS::EC2::NatGateway",
        "AWS::EC2::EIP",
        "AWS::EC2::VPCGatewayAttachment",
    ):
        assert resources_of_type(database, resource_type) == {}, resource_type

    # Then every route it declares goes over the peering, and none to 0.0.0.0/0
    for route in routes(database):
        assert set(route) == {"RouteTableId", "DestinationCidrBlock", "VpcPeeringConnectionId"}
        assert route["VpcPeeringConnectionId"] == {"Ref": "VpcPeeringConnection"}
        assert route["DestinationCidrBlock"] != "0.0.0.0/0"


def test_peering_routes_exist_in_both_vpcs_private_route_tables(database: Template) -> None:
    # Given the peering routes, by route table
    by_table = {
        str(referenced_id(route["RouteTableId"])): route["DestinationCidrBlock"]
        for route in routes(database)
    }

    # Then each of the database VPC's route tables reaches the app VPC, and both private route
    # tables of the app VPC (parameters from the network stack) reach the database VPC
    for table_id in resources_of_type(database, "AWS::EC2::RouteTable"):
        assert by_table.pop(table_id) == {"Ref": "AppVpcCidr"}, table_id
    assert by_table == {
        "AppPrivateRouteTableAId": {"Ref": "VpcCidr"},
        "AppPrivateRouteTableBId": {"Ref": "VpcCidr"},
    }


def test_peering_joins_the_database_vpc_and_the_app_vpc(database: Template) -> None:
    [peering_id] = resources_of_type(database, "AWS::EC2::VPCPeeringConnection")
    peering = properties(database, peering_id)

    assert peering["VpcId"] == {"Ref": "Vpc"}
    assert peering["PeerVpcId"] == {"Ref": "AppVpcId"}


def test_database_takes_5432_only_from_the_backends_security_groups(database: Template) -> None:
    # Given the database's security group
    group = properties(database, "DatabaseSecurityGroup")
    assert resources_of_type(database, "AWS::EC2::SecurityGroupIngress") == {}

    # Then its only ingress is PostgreSQL from the api, worker and migration groups
    sources = set()
    for rule in group["SecurityGroupIngress"]:
        assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 5432, 5432)
        assert set(rule) == {
            "Description",
            "IpProtocol",
            "FromPort",
            "ToPort",
            "SourceSecurityGroupId",
        }
        sources.add(str(referenced_id(rule["SourceSecurityGroupId"])))
    assert sources == APP_SECURITY_GROUP_PARAMETERS

    # And it sends nothing (the single rule matches no packet), and waits for the peering
    [egress] = group["SecurityGroupEgress"]
    assert egress["CidrIp"] == "255.255.255.255/32"
    assert database["Resources"]["DatabaseSecurityGroup"]["DependsOn"] == "VpcPeeringConnection"
    assert database_instance(database)["VPCSecurityGroups"] == [{"Ref": "DatabaseSecurityGroup"}]


def test_database_is_private_multi_az_and_in_the_database_subnets(database: Template) -> None:
    instance = database_instance(database)
    subnet_group = properties(database, "DatabaseSubnetGroup")

    assert instance["PubliclyAccessible"] is False
    # Multi-AZ unless the environment says otherwise (dev: the next test)
    assert instance["MultiAZ"] == {"Ref": "MultiAZ"}
    assert database["Parameters"]["MultiAZ"]["Default"] == "true"
    assert instance["DBSubnetGroupName"] == {"Ref": "DatabaseSubnetGroup"}
    assert subnet_group["SubnetIds"] == [{"Ref": "SubnetA"}, {"Ref": "SubnetB"}]


def samconfig_parameter(environment: str, name: str) -> str | None:
    config = tomllib.loads((REPO_ROOT / "samconfig.toml").read_text(encoding="utf-8"))
    overrides = config[environment]["deploy"]["parameters"]["parameter_overrides"]
    found = [item.split("=", 1)[1] for item in overrides if item.startswith(f"{name}=")]
    return found[0] if found else None


def test_dev_runs_one_database_instance_and_one_api_task_staging_and_prod_keep_a_standby(
    root_template: Template,
) -> None:
    # Given the root template's database stack and samconfig.toml's environments
    passed = root_template["Resources"]["DatabaseStack"]["Properties"]["Parameters"]

    # Then the root passes DatabaseMultiAZ through; dev turns the standby off and keeps one
    # api task at rest, staging and prod keep a standby (and two api tasks: the default)
    assert passed["MultiAZ"] == {"Ref": "DatabaseMultiAZ"}
    assert root_template["Parameters"]["DatabaseMultiAZ"]["Default"] == "true"
    assert samconfig_parameter("default", "DatabaseMultiAZ") == "false"
    assert samconfig_parameter("default", "ApiMinTasks") == "1"
    for environment in ("staging", "prod"):
        assert samconfig_parameter(environment, "DatabaseMultiAZ") == "true"
        assert int(samconfig_parameter(environment, "ApiMinTasks") or "2") >= 2


def test_iam_authentication_is_on_and_the_instance_resource_id_is_an_output(
    database: Template,
) -> None:
    # Given the instance and the stack's outputs
    instance = database_instance(database)

    # Then herald_app can log in with IAM tokens, and the backend learns the resource id
    # its rds-db:connect ARN names
    assert instance["EnableIAMDatabaseAuthentication"] is True
    assert database["Outputs"]["DatabaseResourceId"]["Value"] == {
        "Fn::GetAtt": ["Database", "DbiResourceId"]
    }


def test_server_certificate_comes_from_a_ca_in_the_bundle_the_image_ships(
    database: Template,
) -> None:
    # The global bundle holds every RDS CA; rds-ca-rsa2048-g1 is RDS's default and in it
    assert database_instance(database)["CACertificateIdentifier"] == "rds-ca-rsa2048-g1"


def test_storage_and_master_secret_are_encrypted_with_the_stacks_own_key(
    database: Template,
) -> None:
    instance = database_instance(database)

    assert instance["StorageEncrypted"] is True
    assert instance["KmsKeyId"] == {"Fn::GetAtt": ["DatabaseKey", "Arn"]}
    assert instance["ManageMasterUserPassword"] is True
    assert instance["MasterUserSecret"]["KmsKeyId"] == {"Fn::GetAtt": ["DatabaseKey", "Arn"]}
    assert "MasterUserPassword" not in instance
    assert instance["PerformanceInsightsKMSKeyId"] == {
        "Fn::If": [
            "HasPerformanceInsights",
            {"Fn::GetAtt": ["DatabaseKey", "Arn"]},
            {"Ref": "AWS::NoValue"},
        ]
    }


def test_backups_deletion_protection_and_snapshot_on_delete_or_replace(
    database: Template,
) -> None:
    # Given the instance resource and its retention parameter
    [instance_id] = resources_of_type(database, "AWS::RDS::DBInstance")
    resource = database["Resources"][instance_id]
    instance = resource["Properties"]
    retention = database["Parameters"]["BackupRetentionDays"]

    # Then backups are kept at least 7 days whatever the parameter, and the data survives
    # a delete or a replacement
    assert instance["BackupRetentionPeriod"] == {"Ref": "BackupRetentionDays"}
    assert int(retention["MinValue"]) >= 7
    assert int(retention["Default"]) >= 7
    assert instance["DeletionProtection"] is True
    assert resource["DeletionPolicy"] == "Snapshot"
    assert resource["UpdateReplacePolicy"] == "Snapshot"
    assert instance["CopyTagsToSnapshot"] is True
    assert instance["AutoMinorVersionUpgrade"] is True


def test_parameter_group_forces_tls_and_logs_what_an_incident_needs(database: Template) -> None:
    instance = database_instance(database)
    group = properties(database, "DatabaseParameterGroup")

    assert instance["DBParameterGroupName"] == {"Ref": "DatabaseParameterGroup"}
    assert group["Parameters"]["rds.force_ssl"] == "1"
    for name in ("log_min_duration_statement", "log_connections", "log_lock_waits"):
        assert name in group["Parameters"], name
    # The family follows the engine's major version, so a version change cannot mismatch it
    assert group["Family"]["Fn::Sub"][1]["Major"] == {
        "Fn::Select": [0, {"Fn::Split": [".", {"Ref": "EngineVersion"}]}]
    }


def test_exported_logs_land_in_the_stacks_encrypted_log_groups(database: Template) -> None:
    # Given the log types RDS exports and the instance's identifier
    instance = database_instance(database)
    identifier, variables = instance["DBInstanceIdentifier"]["Fn::Sub"]

    # Then each goes to a log group of this stack, created first (retention, KMS), whose name
    # is the one RDS derives from the identifier
    names = {
        str(properties(database, log_group_id)["LogGroupName"]["Fn::Sub"][0]): (
            properties(database, log_group_id)["LogGroupName"]["Fn::Sub"][1]
        )
        for log_group_id in database["Resources"]["Database"]["DependsOn"]
    }
    for log_type in instance["EnableCloudwatchLogsExports"]:
        assert names.pop(f"/aws/rds/instance/{identifier}/{log_type}") == variables, log_type
    assert names == {}


def test_performance_insights_and_enhanced_monitoring_are_parameters(database: Template) -> None:
    instance = database_instance(database)

    assert instance["EnablePerformanceInsights"] == {
        "Fn::If": ["HasPerformanceInsights", True, False]
    }
    assert instance["MonitoringInterval"] == {"Ref": "MonitoringIntervalSeconds"}
    assert instance["MonitoringRoleArn"]["Fn::If"][0] == "HasEnhancedMonitoring"
    assert instance["EngineVersion"] == {"Ref": "EngineVersion"}
    assert instance["DBInstanceClass"] == {"Ref": "InstanceClass"}
