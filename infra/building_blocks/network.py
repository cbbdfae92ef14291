"""The VPC: two availability zones, flow logs, and egress by NAT or by public subnets."""

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.building_blocks.log_groups import container_log_group
from infra.config import Egress, NetworkConfig


class Network(Construct):
    """A VPC whose subnets follow the egress choice.

    - public: load balancers (and, with Egress.PUBLIC_SUBNETS, the Fargate tasks);
    - private (only with Egress.NAT): the Fargate tasks, behind NAT gateways;
    - isolated: the database, with no route to or from the internet in either mode.

    An S3 gateway endpoint (free) keeps bucket traffic off the NAT gateways and the internet.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: NetworkConfig,
        flow_log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        nat = config.egress is Egress.NAT
        subnets = [
            ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
            ec2.SubnetConfiguration(
                name="data", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
            ),
        ]
        if nat:
            subnets.insert(
                1,
                ec2.SubnetConfiguration(
                    name="app", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=22
                ),
            )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(config.cidr),
            availability_zones=list(config.availability_zones),
            nat_gateways=config.nat_gateways if nat else 0,
            subnet_configuration=subnets,
            restrict_default_security_group=True,
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)
            },
        )
        self.flow_log_group = container_log_group(self, "FlowLogs", retention=flow_log_retention)
        self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(self.flow_log_group),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )
        # Where Fargate tasks run, and whether they need a public IP to reach AWS APIs.
        self.task_subnets = ec2.SubnetSelection(
            subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS if nat else ec2.SubnetType.PUBLIC
        )
        self.tasks_need_public_ip = not nat
        self.database_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        # Internal load balancers need no egress: private subnets with NAT, isolated ones without.
        self.internal_subnets = ec2.SubnetSelection(
            subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS
            if nat
            else ec2.SubnetType.PRIVATE_ISOLATED
        )
