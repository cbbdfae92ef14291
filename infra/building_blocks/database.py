"""PostgreSQL for Dagster's run, event-log and schedule storage (dagster-postgres)."""

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from constructs import Construct

from infra.building_blocks.nag import acknowledge
from infra.config import DatabaseConfig

DATABASE_NAME = "dagster"
DATABASE_USER = "dagster"
DATABASE_PORT = 5432


class DagsterDatabase(Construct):
    """An RDS PostgreSQL instance in isolated subnets, encrypted, TLS required, its password
    generated into Secrets Manager, its logs exported with the environment's retention.

    The log group is created here (rather than by RDS) so its retention is part of the template
    instead of a custom resource.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        config: DatabaseConfig,
        instance_identifier: str,
        secret_name: str,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        engine = rds.DatabaseInstanceEngine.postgres(version=rds.PostgresEngineVersion.VER_17_9)
        parameters = rds.ParameterGroup(
            self,
            "Parameters",
            engine=engine,
            description="Dagster storage: TLS only, slow statements logged",
            parameters={"rds.force_ssl": "1", "log_min_duration_statement": "1000"},
        )
        self.log_group = logs.LogGroup(
            self,
            "PostgresLogs",
            log_group_name=f"/aws/rds/instance/{instance_identifier}/postgresql",
            retention=log_retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="Dagster PostgreSQL: only Dagster tasks may connect",
            allow_all_outbound=False,
        )
        self.instance = rds.DatabaseInstance(
            self,
            "Instance",
            instance_identifier=instance_identifier,
            engine=engine,
            instance_type=ec2.InstanceType(config.instance_class),
            vpc=vpc,
            vpc_subnets=subnets,
            security_groups=[self.security_group],
            database_name=DATABASE_NAME,
            port=DATABASE_PORT,
            credentials=rds.Credentials.from_generated_secret(
                DATABASE_USER, secret_name=secret_name
            ),
            parameter_group=parameters,
            allocated_storage=config.allocated_storage_gib,
            max_allocated_storage=config.max_allocated_storage_gib,
            storage_type=rds.StorageType.GP3,
            storage_encrypted=True,
            multi_az=config.multi_az,
            backup_retention=Duration.days(config.backup_retention_days),
            deletion_protection=config.deletion_protection,
            cloudwatch_logs_exports=["postgresql"],
            auto_minor_version_upgrade=True,
            publicly_accessible=False,
            copy_tags_to_snapshot=True,
            removal_policy=(
                RemovalPolicy.SNAPSHOT if removal_policy is RemovalPolicy.RETAIN else removal_policy
            ),
        )
        self.instance.node.add_dependency(self.log_group)
        secret = self.instance.secret
        if secret is None:  # from_generated_secret always creates one
            raise RuntimeError("the database has no generated secret")
        self.secret = secret
        acknowledge(
            self.instance.node.find_child("Secret"),  # the generated secret, not its attachment
            "AwsSolutions-SMG4",
            "The Dagster webserver, daemon and code server hold this password for their whole "
            "life; a scheduled rotation would break them until redeployed. Rotate with "
            "`aws secretsmanager rotate-secret`, then force a new deployment of the services.",
        )
        acknowledge(
            self.instance,
            "AwsSolutions-RDS11",
            "A non-default port is obscurity only: the instance is in isolated subnets and its "
            "security group admits nothing but the Dagster tasks' security groups.",
        )
        if not config.multi_az:
            acknowledge(
                self.instance,
                "AwsSolutions-RDS3",
                "Single-AZ in this environment (dev) to halve the cost; it holds only Dagster run "
                "history, which a restore from the daily snapshot recovers. Prod is Multi-AZ.",
            )
        if not config.deletion_protection:
            acknowledge(
                self.instance,
                "AwsSolutions-RDS10",
                "Deletion protection is off in this environment (dev) so `cdk destroy` cleans up; "
                "prod enables it (DatabaseConfig.deletion_protection).",
            )
