"""The FastAPI serving container on Fargate Spot behind a public ALB that only CloudFront reaches.

Two locks on the load balancer: its security group admits only CloudFront's origin-facing
managed prefix list, and its listener forwards only requests that carry CloudFront's secret
origin header (any CloudFront distribution, someone else's too, would pass the first lock).
"""

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.building_blocks.log_groups import awslogs, container_log_group
from infra.building_blocks.nag import acknowledge, acknowledge_wildcards
from infra.config import ServingConfig

ORIGIN_VERIFY_HEADER = "X-Origin-Verify"
HEALTH_CHECK_PATH = "/healthz"


class ServingService(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name_prefix: str,
        vpc: ec2.IVpc,
        task_subnets: ec2.SubnetSelection,
        assign_public_ip: bool,
        image: ecs.ContainerImage,
        config: ServingConfig,
        environment: Mapping[str, str],
        secrets: Mapping[str, ecs.Secret],
        cloudfront_prefix_list_id: str,
        log_retention: logs.RetentionDays,
        container_insights: bool,
        access_logs: s3.IBucket,
        origin_certificate: acm.ICertificate | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=vpc,
            enable_fargate_capacity_providers=True,
            container_insights_v2=(
                ecs.ContainerInsights.ENABLED
                if container_insights
                else ecs.ContainerInsights.DISABLED
            ),
        )
        self.log_group = container_log_group(self, "Logs", retention=log_retention)
        self.task_definition = ecs.FargateTaskDefinition(
            self,
            "Task",
            cpu=config.cpu,
            memory_limit_mib=config.memory_mib,
            runtime_platform=ecs.RuntimePlatform(
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
                cpu_architecture=ecs.CpuArchitecture.X86_64,
            ),
        )
        self.task_definition.add_container(
            "api",
            image=image,
            environment=dict(environment),
            secrets=dict(secrets),
            port_mappings=[ecs.PortMapping(container_port=config.container_port, name="http")],
            health_check=ecs.HealthCheck(
                command=[
                    "CMD",
                    "python",
                    "-c",
                    "import urllib.request; urllib.request.urlopen("
                    f"'http://127.0.0.1:{config.container_port}{HEALTH_CHECK_PATH}', timeout=4)",
                ],
                interval=Duration.seconds(config.health_check_interval_seconds),
                timeout=Duration.seconds(5),
                start_period=Duration.seconds(60),
                retries=3,
            ),
            logging=awslogs(self.log_group, "api"),
        )
        self.task_role = self.task_definition.task_role

        service_group = ec2.SecurityGroup(
            self, "ServiceSecurityGroup", vpc=vpc, description="Serving tasks: only from the ALB"
        )
        capacity = "FARGATE_SPOT" if config.fargate_spot else "FARGATE"
        self.service = ecs.FargateService(
            self,
            "Service",
            cluster=self.cluster,
            task_definition=self.task_definition,
            desired_count=config.min_tasks,
            vpc_subnets=task_subnets,
            assign_public_ip=assign_public_ip,
            security_groups=[service_group],
            capacity_provider_strategies=[
                ecs.CapacityProviderStrategy(capacity_provider=capacity, weight=1)
            ],
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            min_healthy_percent=100,
            max_healthy_percent=200,
            health_check_grace_period=Duration.seconds(120),
            propagate_tags=ecs.PropagatedTagSource.SERVICE,
        )
        scaling = self.service.auto_scale_task_count(
            min_capacity=config.min_tasks, max_capacity=config.max_tasks
        )
        scaling.scale_on_cpu_utilization(
            "Cpu",
            target_utilization_percent=config.target_utilization_percent,
            scale_in_cooldown=Duration.minutes(5),
            scale_out_cooldown=Duration.minutes(1),
        )
        scaling.scale_on_memory_utilization(
            "Memory",
            target_utilization_percent=config.target_utilization_percent,
            scale_in_cooldown=Duration.minutes(5),
            scale_out_cooldown=Duration.minutes(1),
        )

        # --- The public ALB, reachable from CloudFront only. --------------------------------
        self.load_balancer_security_group = ec2.SecurityGroup(
            self,
            "LoadBalancerSecurityGroup",
            vpc=vpc,
            description="Serving ALB: CloudFront origin-facing addresses only",
            allow_all_outbound=False,
        )
        listener_port = 443 if origin_certificate else 80
        self.load_balancer_security_group.add_ingress_rule(
            ec2.Peer.prefix_list(cloudfront_prefix_list_id),
            ec2.Port.tcp(listener_port),
            "CloudFront origin-facing managed prefix list",
        )
        self.load_balancer = elbv2.ApplicationLoadBalancer(
            self,
            "LoadBalancer",
            vpc=vpc,
            internet_facing=True,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            security_group=self.load_balancer_security_group,
            drop_invalid_header_fields=True,
            # Streaming chat answers keep a connection open for a while.
            idle_timeout=Duration.seconds(120),
        )
        self.load_balancer.log_access_logs(access_logs, prefix=f"{name_prefix}/serving-alb")
        self.origin_secret = secretsmanager.Secret(
            self,
            "OriginVerify",
            description="Shared between CloudFront (origin header) and the serving ALB listener",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                exclude_punctuation=True, password_length=48
            ),
        )
        if origin_certificate:
            self.listener = self.load_balancer.add_listener(
                "Https",
                port=443,
                certificates=[
                    elbv2.ListenerCertificate.from_certificate_manager(origin_certificate)
                ],
                ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,
                open=False,
                default_action=_forbidden(),
            )
        else:
            self.listener = self.load_balancer.add_listener(
                "Http", port=80, open=False, default_action=_forbidden()
            )
        self.target_group = elbv2.ApplicationTargetGroup(
            self,
            "Targets",
            vpc=vpc,
            port=config.container_port,
            protocol=elbv2.ApplicationProtocol.HTTP,
            target_type=elbv2.TargetType.IP,
            targets=[self.service],
            health_check=elbv2.HealthCheck(
                path=HEALTH_CHECK_PATH,
                interval=Duration.seconds(config.health_check_interval_seconds),
                timeout=Duration.seconds(5),
                healthy_threshold_count=2,
                unhealthy_threshold_count=3,
                healthy_http_codes="200",
            ),
            deregistration_delay=Duration.seconds(30),
        )
        # Prometheus metrics are for the VPC, not for the internet.
        self.listener.add_action(
            "HideMetrics",
            priority=5,
            conditions=[elbv2.ListenerCondition.path_patterns(["/metrics", "/metrics/*"])],
            action=elbv2.ListenerAction.fixed_response(
                404, content_type="text/plain", message_body="Not Found"
            ),
        )
        self.listener.add_action(
            "FromCloudFront",
            priority=10,
            conditions=[
                elbv2.ListenerCondition.http_header(
                    ORIGIN_VERIFY_HEADER, [self.origin_secret.secret_value.unsafe_unwrap()]
                )
            ],
            action=elbv2.ListenerAction.forward([self.target_group]),
        )
        self.load_balancer.connections.allow_to(
            service_group, ec2.Port.tcp(config.container_port), "ALB to serving tasks"
        )

        acknowledge(
            self.task_definition,
            "AwsSolutions-ECS2",
            "The plain environment holds configuration only (index URI, upload bucket, model "
            "id, CORS origins); API key hashes and Upstash credentials are ECS secrets.",
        )
        acknowledge_wildcards(
            self.task_definition.obtain_execution_role(),
            resources=["*"],
            reason="ecr:GetAuthorizationToken has no resource-level permissions; image pulls "
            "and log writes are scoped to the asset repository and the log group.",
        )
        acknowledge(
            self.origin_secret,
            "AwsSolutions-SMG4",
            "The origin header value is read by CloudFront and the ALB listener at deploy time "
            "only; rotating it means redeploying this stack (a new value reaches both at once), "
            "which a rotation Lambda cannot do.",
        )
        if not container_insights:
            acknowledge(
                self.cluster,
                "AwsSolutions-ECS4",
                "Container Insights is off in this environment (dev) to save its per-metric "
                "charge; the dashboard and alarms use the free AWS/ECS service metrics. Prod "
                "enables it.",
            )


def _forbidden() -> elbv2.ListenerAction:
    return elbv2.ListenerAction.fixed_response(
        403, content_type="text/plain", message_body="Forbidden"
    )
