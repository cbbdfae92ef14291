"""Dagster on ECS Fargate: webserver, daemon and code-location server as services, runs as tasks.

- The code server (`dagster api grpc`) serves the `lorechat_pipeline` code location on port 4000,
  found by the others through Cloud Map (`code.<namespace>`); sensors run in it.
- The daemon runs schedules, sensors and the queued run coordinator and launches each run as a
  Fargate task of the `run` task definition through dagster-aws' EcsRunLauncher
  (`infra/dagster/dagster.yaml`), in the daemon's own subnets and security group.
- The webserver sits behind an internal ALB: it has no public address and no route from the
  internet. Reach it over VPN/peering, or with SSM port forwarding through the webserver task
  (ECS Exec), see the README.

The daemon service uses the FARGATE launch type on purpose: EcsRunLauncher copies the launching
task's launch type, and its capacity-provider path is not usable for a copied configuration.
"""

from collections.abc import Mapping

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_servicediscovery as servicediscovery
from constructs import Construct

from infra.building_blocks.database import DATABASE_NAME, DATABASE_PORT, DagsterDatabase
from infra.building_blocks.log_groups import awslogs, container_log_group
from infra.building_blocks.nag import acknowledge, acknowledge_wildcards
from infra.config import PipelineConfig

CODE_SERVER_PORT = 4000
WEBSERVER_PORT = 3000
CODE_SERVER_NAME = "code"
RUN_CONTAINER_NAME = "run"  # dagster.yaml: run_launcher.config.container_name
RUN_TASK_DEFINITION_ENV = "DAGSTER_RUN_TASK_DEFINITION_ARN"  # dagster.yaml: task_definition.env
LOCATION_MODULE = "lorechat_pipeline.definitions"
COMPUTE_LOG_BUCKET_ENV = "DAGSTER_COMPUTE_LOG_BUCKET"  # dagster.yaml: compute_logs.config.bucket
COMPUTE_LOG_PREFIX = "dagster/compute-logs/"  # dagster.yaml: compute_logs.config.prefix


class DagsterDeployment(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name_prefix: str,
        vpc: ec2.IVpc,
        task_subnets: ec2.SubnetSelection,
        assign_public_ip: bool,
        load_balancer_subnets: ec2.SubnetSelection,
        webserver_client_cidrs: list[str],
        image: ecs.ContainerImage,
        database: DagsterDatabase,
        database_secret: secretsmanager.ISecret,
        compute_log_bucket: s3.IBucket,
        config: PipelineConfig,
        app_environment: Mapping[str, str],
        app_secrets: Mapping[str, ecs.Secret],
        log_retention: logs.RetentionDays,
        container_insights: bool,
        access_logs: s3.IBucket,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        namespace = f"{name_prefix.lower()}.pipeline.internal"
        # Literal names (not tokens): IAM statements and their cdk-nag acknowledgements name them.
        self.cluster_name = f"{name_prefix}-pipeline"
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            cluster_name=self.cluster_name,
            vpc=vpc,
            container_insights_v2=(
                ecs.ContainerInsights.ENABLED
                if container_insights
                else ecs.ContainerInsights.DISABLED
            ),
            default_cloud_map_namespace=ecs.CloudMapNamespaceOptions(
                name=namespace, vpc=vpc, use_for_service_connect=False
            ),
        )
        self.log_group_name = f"/{name_prefix.lower().replace('-', '/')}/pipeline"
        self.log_group = container_log_group(
            self, "Logs", retention=log_retention, log_group_name=self.log_group_name
        )
        self._security_groups: dict[str, ec2.SecurityGroup] = {}

        # What dagster.yaml reads, in every Dagster container (runs included).
        instance_environment = {
            "AWS_REGION": stack.region,
            "AWS_DEFAULT_REGION": stack.region,
            COMPUTE_LOG_BUCKET_ENV: compute_log_bucket.bucket_name,
            "DAGSTER_PG_HOST": database.instance.db_instance_endpoint_address,
            "DAGSTER_PG_PORT": str(DATABASE_PORT),
            "DAGSTER_PG_DB": DATABASE_NAME,
        }
        postgres_secrets = {
            "DAGSTER_PG_USERNAME": ecs.Secret.from_secrets_manager(database_secret, "username"),
            "DAGSTER_PG_PASSWORD": ecs.Secret.from_secrets_manager(database_secret, "password"),
        }

        # --- Runs: one Fargate task per Dagster run, launched by the daemon. -----------------
        self.run_task_definition = ecs.FargateTaskDefinition(
            self,
            "RunTask",
            family=f"{name_prefix}-run",
            cpu=config.run.cpu,
            memory_limit_mib=config.run.memory_mib,
            ephemeral_storage_gib=40,
            runtime_platform=_LINUX_X86,
        )
        self.run_task_definition.add_container(
            RUN_CONTAINER_NAME,
            image=image,
            # EcsRunLauncher overrides the command with `dagster api execute_run ...`.
            environment={**app_environment, **instance_environment},
            secrets={**app_secrets, **postgres_secrets},
            logging=awslogs(self.log_group, "run"),
        )
        self.run_role = self.run_task_definition.task_role

        control_environment = {
            **instance_environment,
            RUN_TASK_DEFINITION_ENV: self.run_task_definition.task_definition_arn,
        }
        grpc_target = [
            "--grpc-host",
            f"{CODE_SERVER_NAME}.{namespace}",
            "--grpc-port",
            str(CODE_SERVER_PORT),
        ]

        # --- Code server: the code location over gRPC; sensors evaluate here. --------------
        code_definition = self._task_definition(
            "CodeServerTask", config.code_server.cpu, config.code_server.memory_mib
        )
        code_definition.add_container(
            "code-server",
            image=image,
            command=[
                "dagster",
                "api",
                "grpc",
                "--host",
                "0.0.0.0",
                "--port",
                str(CODE_SERVER_PORT),
                "--module-name",
                LOCATION_MODULE,
            ],
            environment={**app_environment, **control_environment},
            secrets={**app_secrets, **postgres_secrets},
            port_mappings=[ecs.PortMapping(container_port=CODE_SERVER_PORT, name="grpc")],
            health_check=ecs.HealthCheck(
                command=[
                    "CMD",
                    "dagster",
                    "api",
                    "grpc-health-check",
                    "--port",
                    str(CODE_SERVER_PORT),
                ],
                interval=Duration.seconds(30),
                start_period=Duration.seconds(120),
                retries=3,
                timeout=Duration.seconds(10),
            ),
            logging=awslogs(self.log_group, "code-server"),
        )
        self.code_server_role = code_definition.task_role
        self.code_server_service = self._service(
            "CodeServer",
            code_definition,
            vpc=vpc,
            subnets=task_subnets,
            assign_public_ip=assign_public_ip,
            description="Dagster code server: gRPC from the webserver and daemon",
            cloud_map=ecs.CloudMapOptions(
                name=CODE_SERVER_NAME,
                dns_record_type=servicediscovery.DnsRecordType.A,
                dns_ttl=Duration.seconds(10),
            ),
        )

        # --- Daemon: schedules, sensors, run queue, run launcher, run monitoring. ------------
        daemon_definition = self._task_definition(
            "DaemonTask", config.daemon.cpu, config.daemon.memory_mib
        )
        daemon_definition.add_container(
            "daemon",
            image=image,
            command=["dagster-daemon", "run", *grpc_target],
            environment=control_environment,
            secrets=postgres_secrets,
            logging=awslogs(self.log_group, "daemon"),
        )
        self.daemon_role = daemon_definition.task_role
        self.daemon_service = self._service(
            "Daemon",
            daemon_definition,
            vpc=vpc,
            subnets=task_subnets,
            assign_public_ip=assign_public_ip,
            description="Dagster daemon and the run tasks it launches",
            # Exactly one daemon: stop the old one before starting the new one.
            min_healthy_percent=0,
            max_healthy_percent=100,
        )

        # --- Webserver: the UI and GraphQL API, behind an internal ALB. ---------------------
        web_definition = self._task_definition(
            "WebserverTask", config.webserver.cpu, config.webserver.memory_mib
        )
        web_definition.add_container(
            "webserver",
            image=image,
            command=[
                "dagster-webserver",
                "--host",
                "0.0.0.0",
                "--port",
                str(WEBSERVER_PORT),
                *grpc_target,
            ],
            environment=control_environment,
            secrets=postgres_secrets,
            port_mappings=[ecs.PortMapping(container_port=WEBSERVER_PORT, name="http")],
            logging=awslogs(self.log_group, "webserver"),
        )
        self.webserver_role = web_definition.task_role
        self.webserver_service = self._service(
            "Webserver",
            web_definition,
            vpc=vpc,
            subnets=task_subnets,
            assign_public_ip=assign_public_ip,
            description="Dagster webserver: only from its internal load balancer",
            enable_execute_command=True,
            # The image carries torch: give the webserver time to start before ALB checks count.
            health_check_grace_period=Duration.seconds(180),
        )

        load_balancer_group = ec2.SecurityGroup(
            self,
            "WebserverLoadBalancerSecurityGroup",
            vpc=vpc,
            description="Internal ALB of the Dagster webserver: VPC and VPN clients only",
            allow_all_outbound=False,
        )
        for cidr in webserver_client_cidrs:
            load_balancer_group.add_ingress_rule(
                ec2.Peer.ipv4(cidr), ec2.Port.tcp(80), "Dagster UI from inside the network"
            )
        self.load_balancer = elbv2.ApplicationLoadBalancer(
            self,
            "WebserverLoadBalancer",
            vpc=vpc,
            internet_facing=False,
            vpc_subnets=load_balancer_subnets,
            security_group=load_balancer_group,
            drop_invalid_header_fields=True,
        )
        self.load_balancer.log_access_logs(access_logs, prefix=f"{name_prefix}/dagster-alb")
        listener = self.load_balancer.add_listener("Http", port=80, open=False)
        listener.add_targets(
            "Webserver",
            port=WEBSERVER_PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            targets=[self.webserver_service],
            health_check=elbv2.HealthCheck(
                path="/server_info", interval=Duration.seconds(30), healthy_http_codes="200"
            ),
            deregistration_delay=Duration.seconds(30),
        )

        # --- Who talks to whom (ingress rules only: egress is open for AWS APIs). ----------
        groups = self._security_groups
        for client in ("Webserver", "Daemon"):
            groups["CodeServer"].add_ingress_rule(
                groups[client], ec2.Port.tcp(CODE_SERVER_PORT), f"Dagster gRPC from {client}"
            )
        # Written here rather than through `connections`, so the rules live in this stack:
        # the data stack must never depend on a compute stack. Run tasks reuse the daemon's
        # security group (use_current_ecs_task_config), so they reach the database too.
        for client in ("Webserver", "Daemon", "CodeServer"):
            ec2.CfnSecurityGroupIngress(
                self,
                f"DatabaseFrom{client}",
                group_id=database.security_group.security_group_id,
                source_security_group_id=groups[client].security_group_id,
                ip_protocol="tcp",
                from_port=DATABASE_PORT,
                to_port=DATABASE_PORT,
                description=f"Dagster storage from {client}",
            )

        self._grant_run_launcher(self.daemon_role, stack, launch=True)
        # The webserver builds the same run launcher (it describes the run task definition
        # at start) and terminates runs from the UI.
        self._grant_run_launcher(self.webserver_role, stack, launch=False)
        self.services = (self.webserver_service, self.daemon_service, self.code_server_service)
        self._acknowledge(stack, container_insights)

    def _task_definition(
        self, construct_id: str, cpu: int, memory: int
    ) -> ecs.FargateTaskDefinition:
        return ecs.FargateTaskDefinition(
            self, construct_id, cpu=cpu, memory_limit_mib=memory, runtime_platform=_LINUX_X86
        )

    def _service(
        self,
        construct_id: str,
        task_definition: ecs.FargateTaskDefinition,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        assign_public_ip: bool,
        description: str,
        cloud_map: ecs.CloudMapOptions | None = None,
        min_healthy_percent: int = 100,
        max_healthy_percent: int = 200,
        enable_execute_command: bool = False,
        health_check_grace_period: Duration | None = None,
    ) -> ecs.FargateService:
        security_group = ec2.SecurityGroup(
            self, f"{construct_id}SecurityGroup", vpc=vpc, description=description
        )
        self._security_groups[construct_id] = security_group
        return ecs.FargateService(
            self,
            construct_id,
            cluster=self.cluster,
            task_definition=task_definition,
            desired_count=1,
            vpc_subnets=subnets,
            assign_public_ip=assign_public_ip,
            security_groups=[security_group],
            cloud_map_options=cloud_map,
            min_healthy_percent=min_healthy_percent,
            max_healthy_percent=max_healthy_percent,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            enable_execute_command=enable_execute_command,
            propagate_tags=ecs.PropagatedTagSource.SERVICE,
            health_check_grace_period=health_check_grace_period,
        )

    def _tasks_in_cluster(self, stack: Stack) -> str:
        return stack.format_arn(
            service="ecs", resource="task", resource_name=f"{self.cluster_name}/*"
        )

    def _run_family(self, stack: Stack) -> str:
        return stack.format_arn(
            service="ecs",
            resource="task-definition",
            resource_name=f"{self.run_task_definition.family}:*",
        )

    def _run_log_streams(self, stack: Stack) -> str:
        return stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name=f"{self.log_group_name}:log-stream:run/*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )

    def _acknowledge(self, stack: Stack, container_insights: bool) -> None:
        definitions = {
            "run": self.run_task_definition,
            "code server": self.code_server_service.task_definition,
            "daemon": self.daemon_service.task_definition,
            "webserver": self.webserver_service.task_definition,
        }
        for name, definition in definitions.items():
            acknowledge(
                definition,
                "AwsSolutions-ECS2",
                f"The {name} container's plain environment holds configuration only (bucket "
                "URIs, queue URL, database host, run task definition ARN); passwords and "
                "tokens are injected as ECS secrets from Secrets Manager.",
            )
            acknowledge_wildcards(
                definition.obtain_execution_role(),
                resources=["*"],
                reason="ecr:GetAuthorizationToken has no resource-level permissions; image "
                "pulls and log writes are scoped to the asset repository and the log group.",
            )
        acknowledge_wildcards(
            self.daemon_role,
            resources=[
                "*",
                self._tasks_in_cluster(stack),
                self._run_family(stack),
                self._run_log_streams(stack),
            ],
            reason="EcsRunLauncher: ecs:DescribeTaskDefinition and ec2:DescribeNetworkInterfaces "
            "support no resource scoping; RunTask is limited to revisions of the run task "
            "family in this cluster, Describe/Stop/TagResource to tasks of this cluster, log "
            "reads to run streams.",
        )
        acknowledge_wildcards(
            self.webserver_role,
            resources=["*", self._tasks_in_cluster(stack)],
            reason="The webserver builds the EcsRunLauncher (ecs:DescribeTaskDefinition has no "
            "resource scoping) and stops runs of this cluster only; ECS Exec's ssmmessages "
            "channel actions (port forwarding to the UI) have no resource scoping either.",
        )
        if not container_insights:
            acknowledge(
                self.cluster,
                "AwsSolutions-ECS4",
                "Container Insights is off in this environment (dev) to save its per-metric "
                "charge; the dashboard uses the free AWS/ECS service CPU and memory metrics. "
                "Prod enables it.",
            )

    def _grant_run_launcher(self, role: iam.IRole, stack: Stack, *, launch: bool) -> None:
        """Exactly what EcsRunLauncher calls, scoped to this cluster and the run definition."""
        tasks_in_cluster = self._tasks_in_cluster(stack)
        run_family = self._run_family(stack)
        statements = [
            # DescribeTaskDefinition supports no resource-level permission.
            iam.PolicyStatement(actions=["ecs:DescribeTaskDefinition"], resources=["*"]),
            iam.PolicyStatement(
                actions=["ecs:DescribeTasks", "ecs:StopTask"], resources=[tasks_in_cluster]
            ),
        ]
        if launch:
            statements += [
                iam.PolicyStatement(
                    actions=["ecs:RunTask"],
                    resources=[run_family],
                    conditions={
                        "ArnEquals": {
                            "ecs:cluster": stack.format_arn(
                                service="ecs", resource="cluster", resource_name=self.cluster_name
                            )
                        }
                    },
                ),
                iam.PolicyStatement(
                    actions=["ecs:TagResource"],
                    resources=[tasks_in_cluster],
                    conditions={"StringEquals": {"ecs:CreateAction": "RunTask"}},
                ),
                # The launcher reads its own task's subnets and security groups from its ENI.
                iam.PolicyStatement(actions=["ec2:DescribeNetworkInterfaces"], resources=["*"]),
                iam.PolicyStatement(
                    actions=["logs:GetLogEvents"], resources=[self._run_log_streams(stack)]
                ),
            ]
        for statement in statements:
            role.add_to_principal_policy(statement)
        if launch:
            self.run_task_definition.task_role.grant_pass_role(role)
            self.run_task_definition.obtain_execution_role().grant_pass_role(role)


_LINUX_X86 = ecs.RuntimePlatform(
    operating_system_family=ecs.OperatingSystemFamily.LINUX,
    cpu_architecture=ecs.CpuArchitecture.X86_64,
)
