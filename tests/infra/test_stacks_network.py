"""stacks/network.yaml: two AZs, private tasks, NAT and endpoints by parameter, flow logs."""

from __future__ import annotations

from tests.infra.conftest import Template, properties, referenced_id, resources_of_type

INTERFACE_SERVICES = {"sqs", "ecr.api", "ecr.dkr", "logs", "secretsmanager"}


def route_tables_by_subnet(network: Template) -> dict[str, str]:
    """The route table of each subnet, by the subnet's logical ID."""
    return {
        str(referenced_id(association["SubnetId"])): str(referenced_id(association["RouteTableId"]))
        for association_id in resources_of_type(network, "AWS::EC2::SubnetRouteTableAssociation")
        if (association := properties(network, association_id))
    }


def default_route_target(network: Template, route_table_id: str) -> dict[str, object]:
    """The 0.0.0.0/0 route of a route table (its target properties)."""
    [route] = [
        properties(network, route_id)
        for route_id in resources_of_type(network, "AWS::EC2::Route")
        if referenced_id(properties(network, route_id)["RouteTableId"]) == route_table_id
        and properties(network, route_id)["DestinationCidrBlock"] == "0.0.0.0/0"
    ]
    return route


def test_subnets_span_two_azs_and_none_hands_out_public_addresses(network: Template) -> None:
    subnets = {
        subnet_id: properties(network, subnet_id)
        for subnet_id in resources_of_type(network, "AWS::EC2::Subnet")
    }

    assert set(subnets) == {"PublicSubnetA", "PublicSubnetB", "PrivateSubnetA", "PrivateSubnetB"}
    for subnet_id, subnet in subnets.items():
        zone = 0 if subnet_id.endswith("A") else 1
        assert subnet["AvailabilityZone"] == {"Fn::Select": [zone, {"Fn::GetAZs": ""}]}
        assert subnet["MapPublicIpOnLaunch"] is False, subnet_id


def test_public_subnets_route_to_the_internet_gateway(network: Template) -> None:
    tables = route_tables_by_subnet(network)

    for subnet_id in ("PublicSubnetA", "PublicSubnetB"):
        route = default_route_target(network, tables[subnet_id])
        assert route["GatewayId"] == {"Ref": "InternetGateway"}


def test_private_subnets_leave_through_nat_one_shared_or_one_per_az(network: Template) -> None:
    # Given each private subnet's default route
    tables = route_tables_by_subnet(network)
    route_a = default_route_target(network, tables["PrivateSubnetA"])
    route_b = default_route_target(network, tables["PrivateSubnetB"])

    # Then A always uses NAT gateway A; B uses its own only when NatGateways is per-az
    assert route_a["NatGatewayId"] == {"Ref": "NatGatewayA"}
    assert route_b["NatGatewayId"] == {
        "Fn::If": ["HasNatGatewayPerAz", {"Ref": "NatGatewayB"}, {"Ref": "NatGatewayA"}]
    }
    assert network["Conditions"]["HasNatGatewayPerAz"] == {
        "Fn::Equals": [{"Ref": "NatGateways"}, "per-az"]
    }
    assert network["Resources"]["NatGatewayB"]["Condition"] == "HasNatGatewayPerAz"
    assert network["Parameters"]["NatGateways"]["AllowedValues"] == ["single", "per-az"]


def test_gateway_endpoints_serve_both_private_route_tables(network: Template) -> None:
    gateways = {
        properties(network, endpoint_id)["ServiceName"]["Fn::Sub"]: properties(
            network, endpoint_id
        )["RouteTableIds"]
        for endpoint_id in resources_of_type(network, "AWS::EC2::VPCEndpoint")
        if properties(network, endpoint_id)["VpcEndpointType"] == "Gateway"
    }

    private_tables = [{"Ref": "PrivateRouteTableA"}, {"Ref": "PrivateRouteTableB"}]
    assert gateways == {
        "com.amazonaws.${AWS::Region}.s3": private_tables,
        "com.amazonaws.${AWS::Region}.dynamodb": private_tables,
    }


def test_interface_endpoints_exist_only_when_asked_for(network: Template) -> None:
    # Given the interface endpoints
    interfaces = {
        endpoint_id: properties(network, endpoint_id)
        for endpoint_id in resources_of_type(network, "AWS::EC2::VPCEndpoint")
        if properties(network, endpoint_id)["VpcEndpointType"] == "Interface"
    }

    # Then the parameter creates one per service, with private DNS, in the private subnets
    services = {
        endpoint["ServiceName"]["Fn::Sub"].removeprefix("com.amazonaws.${AWS::Region}.")
        for endpoint in interfaces.values()
    }
    assert services == INTERFACE_SERVICES
    for endpoint_id, endpoint in interfaces.items():
        assert network["Resources"][endpoint_id]["Condition"] == "HasInterfaceEndpoints"
        assert endpoint["PrivateDnsEnabled"] is True
        assert endpoint["SubnetIds"] == [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}]


def test_api_tasks_take_traffic_only_from_the_alb_on_8000(network: Template) -> None:
    [ingress] = [
        properties(network, rule_id)
        for rule_id in resources_of_type(network, "AWS::EC2::SecurityGroupIngress")
        if referenced_id(properties(network, rule_id)["GroupId"]) == "ApiSecurityGroup"
    ]

    assert ingress["SourceSecurityGroupId"] == {"Ref": "AlbSecurityGroup"}
    assert (ingress["IpProtocol"], ingress["FromPort"], ingress["ToPort"]) == ("tcp", 8000, 8000)
    assert "SecurityGroupIngress" not in properties(network, "ApiSecurityGroup")
    for group_id in ("WorkerSecurityGroup", "MigrationSecurityGroup"):
        assert "SecurityGroupIngress" not in properties(network, group_id), group_id


def test_alb_may_only_reach_the_api_tasks(network: Template) -> None:
    [egress] = [
        properties(network, rule_id)
        for rule_id in resources_of_type(network, "AWS::EC2::SecurityGroupEgress")
        if referenced_id(properties(network, rule_id)["GroupId"]) == "AlbSecurityGroup"
    ]

    assert egress["DestinationSecurityGroupId"] == {"Ref": "ApiSecurityGroup"}
    assert (egress["FromPort"], egress["ToPort"]) == (8000, 8000)


def test_flow_logs_capture_all_traffic_of_the_vpc(network: Template) -> None:
    [flow_log_id] = resources_of_type(network, "AWS::EC2::FlowLog")
    flow_log = properties(network, flow_log_id)

    assert flow_log["ResourceId"] == {"Ref": "Vpc"}
    assert flow_log["TrafficType"] == "ALL"
    assert flow_log["LogGroupName"] == {"Ref": "FlowLogGroup"}
