from aws_cdk import Duration, Stack
from constructs import Construct

from infra.building_blocks.dagster import COMPUTE_LOG_PREFIX
from infra.building_blocks.database import DagsterDatabase
from infra.building_blocks.nag import acknowledge
from infra.building_blocks.network import Network
from infra.building_blocks.secrets import ApplicationSecrets
from infra.building_blocks.storage import (
    AccessLogBucket,
    ObjectEventQueue,
    SecureBucket,
    upload_cors,
)
from infra.config import EnvironmentConfig

# CDK's singleton Lambda that applies S3 bucket notification configurations.
NOTIFICATIONS_HANDLER = "BucketNotificationsHandler050a0587b7544547bf325f094a3db834"


class DataStack(Stack):
    """Everything stateful, kept apart so compute stacks can be replaced freely: the buckets,
    the event queue, the secrets and Dagster's database (retained in prod). Compute stacks
    import them by name (`config.names`)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        network: Network,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        names = config.names
        removal = config.removal_policy
        noncurrent = Duration.days(config.noncurrent_version_days)
        self.access_logs = AccessLogBucket(
            self,
            "AccessLogs",
            bucket_name=names.access_log_bucket,
            removal_policy=removal,
            expire_after=Duration.days(90),
        ).bucket
        self.source = SecureBucket(
            self,
            "Source",
            bucket_name=names.source_bucket,
            access_logs=self.access_logs,
            log_prefix="s3/source/",
            removal_policy=removal,
            noncurrent_version_expiration=noncurrent,
            cors=upload_cors(config.serving.cors_origins),
        ).bucket
        self.processed = SecureBucket(
            self,
            "Processed",
            bucket_name=names.processed_bucket,
            access_logs=self.access_logs,
            log_prefix="s3/processed/",
            removal_policy=removal,
            noncurrent_version_expiration=noncurrent,
        ).bucket
        self.processed.add_lifecycle_rule(
            id="expire-dagster-compute-logs",
            prefix=COMPUTE_LOG_PREFIX,
            expiration=Duration.days(30),
            noncurrent_version_expiration=Duration.days(1),
        )
        # LanceDB writes immutable fragments and manifests; versioning adds a safety net for
        # an accidental delete, and noncurrent versions expire.
        self.index = SecureBucket(
            self,
            "Index",
            bucket_name=names.index_bucket,
            access_logs=self.access_logs,
            log_prefix="s3/index/",
            removal_policy=removal,
            noncurrent_version_expiration=noncurrent,
        ).bucket
        self.source_events = ObjectEventQueue(
            self,
            "SourceEvents",
            bucket=self.source,
            key_prefix=config.documents_prefix,
            queue_name=names.events_queue,
            dead_letter_queue_name=names.events_dead_letter_queue,
        )
        self.secrets = ApplicationSecrets(
            self,
            "Secrets",
            upstash_secret_name=names.upstash_secret,
            api_keys_secret_name=names.api_keys_secret,
            removal_policy=removal,
        )
        self.database = DagsterDatabase(
            self,
            "DagsterDatabase",
            vpc=network.vpc,
            subnets=network.database_subnets,
            config=config.database,
            instance_identifier=names.database_instance,
            secret_name=names.database_secret,
            log_retention=config.log_retention,
            removal_policy=removal,
        )
        acknowledge(
            self.node.find_child(NOTIFICATIONS_HANDLER),
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AWSLambdaBasicExecutionRole]",
            "CDK's own handler that writes the bucket notification configuration at deploy "
            "time; the managed policy only lets it write its own CloudWatch logs.",
        )
