import json

from aws_cdk.assertions import Match

from tests.infra.conftest import Synthesized
from tests.infra.helpers import only, properties_of, resources


def test_vpc_spans_two_zones_with_public_and_isolated_subnets(dev: Synthesized) -> None:
    template = dev.template(dev.deployment.network)
    template.resource_count_is("AWS::EC2::VPC", 1)
    subnets = properties_of(template, "AWS::EC2::Subnet")
    zones = {subnet["AvailabilityZone"] for subnet in subnets}
    assert zones == {"us-east-1a", "us-east-1b"}
    public = [subnet for subnet in subnets if subnet.get("MapPublicIpOnLaunch")]
    assert len(public) == 2
    assert len(subnets) == 4  # dev: public + isolated, no private-with-egress tier


def test_dev_has_no_nat_and_tasks_use_public_subnets(dev: Synthesized) -> None:
    template = dev.template(dev.deployment.network)
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    assert dev.deployment.network.network.tasks_need_public_ip


def test_prod_routes_private_subnets_through_one_nat_per_zone(prod: Synthesized) -> None:
    template = prod.template(prod.deployment.network)
    template.resource_count_is("AWS::EC2::NatGateway", 2)
    template.resource_count_is("AWS::EC2::Subnet", 6)
    assert not prod.deployment.network.network.tasks_need_public_ip
    # The private tier's default route goes to a NAT gateway.
    template.has_resource_properties(
        "AWS::EC2::Route",
        {"DestinationCidrBlock": "0.0.0.0/0", "NatGatewayId": Match.any_value()},
    )


def test_flow_logs_capture_all_traffic_into_a_week_long_log_group(
    every_environment: Synthesized,
) -> None:
    template = every_environment.template(every_environment.deployment.network)
    template.has_resource_properties(
        "AWS::EC2::FlowLog",
        {
            "ResourceType": "VPC",
            "TrafficType": "ALL",
            "LogDestinationType": "cloud-watch-logs",
        },
    )
    template.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 7})


def test_s3_traffic_uses_a_gateway_endpoint(dev: Synthesized) -> None:
    template = dev.template(dev.deployment.network)
    endpoint = only(properties_of(template, "AWS::EC2::VPCEndpoint"))
    assert endpoint["VpcEndpointType"] == "Gateway"
    assert ".s3" in json.dumps(endpoint["ServiceName"])
    assert len(endpoint["RouteTableIds"]) == 4  # every subnet's route table


def test_default_security_group_is_emptied(dev: Synthesized) -> None:
    template = dev.template(dev.deployment.network)
    assert any(
        resource["Type"] == "Custom::VpcRestrictDefaultSG" for _, resource in resources(template)
    )
