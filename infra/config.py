"""Typed configuration of one deployment environment (dev, prod), chosen once in `app.py`.

Nothing under `infra/` reads environment variables: every difference between environments is a
field here, so a reviewer sees in one file what prod changes compared with dev.
"""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs

PROJECT = "lorechat"


class Egress(StrEnum):
    """How tasks in the VPC reach AWS APIs, Bedrock, Upstash and the container registry.

    NAT: tasks run in private subnets behind NAT gateways (~$33/month each at rest plus
    $0.045/GB processed); nothing in the VPC has a public address.
    PUBLIC_SUBNETS: tasks run in public subnets with a public IP and security groups that admit
    nothing from the internet; no NAT bill, at the price of public addresses on tasks
    ($3.65/month per public IPv4 address while a task runs).
    """

    NAT = "nat"
    PUBLIC_SUBNETS = "public-subnets"


@dataclass(frozen=True, kw_only=True)
class NetworkConfig:
    cidr: str = "10.40.0.0/16"
    availability_zones: tuple[str, ...] = ("us-east-1a", "us-east-1b")
    egress: Egress = Egress.PUBLIC_SUBNETS
    # Only with Egress.NAT: one gateway (cheaper, one AZ's gateway is a single point of failure
    # for egress) or one per AZ.
    nat_gateways: int = 1

    def __post_init__(self) -> None:
        if len(self.availability_zones) != 2:
            raise ValueError("the VPC spans exactly two availability zones")
        if self.egress is Egress.NAT and not 1 <= self.nat_gateways <= 2:
            raise ValueError("with NAT egress, use one or two NAT gateways")


@dataclass(frozen=True, kw_only=True)
class DomainConfig:
    """A public hosted zone the deployment may write records into (no lookup at synth time)."""

    zone_name: str  # example.com
    hosted_zone_id: str  # Z0123456789ABCDEFGHIJ
    record_name: str = "chat"  # chat.example.com serves the app through CloudFront
    origin_record_name: str = "origin-chat"  # the ALB's TLS name (CloudFront -> ALB over HTTPS)

    @property
    def site_domain(self) -> str:
        return f"{self.record_name}.{self.zone_name}"

    @property
    def origin_domain(self) -> str:
        return f"{self.origin_record_name}.{self.zone_name}"


@dataclass(frozen=True, kw_only=True)
class DatabaseConfig:
    instance_class: str = "t4g.micro"
    allocated_storage_gib: int = 20
    max_allocated_storage_gib: int = 50
    multi_az: bool = False
    backup_retention_days: int = 1
    deletion_protection: bool = False


@dataclass(frozen=True, kw_only=True)
class TaskSize:
    cpu: int  # CPU units (1024 = 1 vCPU)
    memory_mib: int


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    webserver: TaskSize = TaskSize(cpu=512, memory_mib=1024)
    daemon: TaskSize = TaskSize(cpu=256, memory_mib=1024)
    code_server: TaskSize = TaskSize(cpu=512, memory_mib=2048)
    # One run = one Fargate task (EcsRunLauncher): parsing and local embedding are CPU-bound.
    run: TaskSize = TaskSize(cpu=2048, memory_mib=8192)
    # LORECHAT_EMBEDDER: sentence-transformers inside the run task, or Amazon Bedrock.
    embedder: Literal["local", "bedrock"] = "local"
    # LORECHAT_VECTOR_STORE: LanceDB in the index bucket, or Upstash Vector (credentials from
    # the Upstash secret).
    vector_store: Literal["lancedb", "upstash"] = "lancedb"
    bedrock_embedding_model_id: str = "amazon.titan-embed-text-v2:0"
    # Who may open the Dagster UI on its internal ALB besides the VPC itself (VPN, peered nets).
    webserver_client_cidrs: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ServingConfig:
    cpu: int = 512
    memory_mib: int = 1024
    min_tasks: int = 1
    max_tasks: int = 4
    target_utilization_percent: int = 70
    health_check_interval_seconds: int = 60
    container_port: int = 8000
    fargate_spot: bool = True
    bedrock_model_id: str = "amazon.nova-micro-v1:0"
    cors_origins: tuple[str, ...] = ()
    # The region's `com.amazonaws.global.cloudfront.origin-facing` managed prefix list
    # (`aws ec2 describe-managed-prefix-lists`); pl-3b927c52 is us-east-1's. It counts as ~55
    # rules against the security group quota (60 by default).
    cloudfront_prefix_list_id: str = "pl-3b927c52"
    # Requests per 5 minutes from one IP address before the WAF blocks it.
    waf_rate_limit_per_5_minutes: int = 1000


@dataclass(frozen=True, kw_only=True)
class MonitoringConfig:
    alarm_email: str
    budget_email: str
    monthly_budget_usd: int
    # Serving alarms.
    latency_p90_seconds: float = 2.0
    server_errors_per_5_minutes: int = 5


@dataclass(frozen=True, kw_only=True)
class ResourceNames:
    """Physical names of the data stack's resources.

    Compute stacks import the buckets and the queue by these names instead of taking
    cross-stack references: IAM policies then hold literal ARNs (reviewable, and cdk-nag
    acknowledgements can name them exactly). Secrets are referenced by ARN (ECS needs the full
    one), through weak references that never block replacing a stack. Bucket names include
    account and region, so they are globally unique.
    """

    environment: str
    account: str
    region: str

    def bucket(self, purpose: str) -> str:
        return f"{PROJECT}-{self.environment}-{purpose}-{self.account}-{self.region}"

    @property
    def source_bucket(self) -> str:
        return self.bucket("source")

    @property
    def processed_bucket(self) -> str:
        return self.bucket("processed")

    @property
    def index_bucket(self) -> str:
        return self.bucket("index")

    @property
    def access_log_bucket(self) -> str:
        return self.bucket("access-logs")

    @property
    def events_queue(self) -> str:
        return f"{PROJECT}-{self.environment}-source-events"

    @property
    def events_dead_letter_queue(self) -> str:
        return f"{PROJECT}-{self.environment}-source-events-dlq"

    def secret(self, purpose: str) -> str:
        return f"{PROJECT}/{self.environment}/{purpose}"

    @property
    def upstash_secret(self) -> str:
        return self.secret("upstash-vector")

    @property
    def api_keys_secret(self) -> str:
        return self.secret("serving-api-keys")

    @property
    def database_secret(self) -> str:
        return self.secret("dagster-database")

    @property
    def database_instance(self) -> str:
        return f"{PROJECT}-{self.environment}-dagster"


@dataclass(frozen=True, kw_only=True)
class EnvironmentConfig:
    name: str  # dev, prod: part of every stack name
    account: str
    region: str
    owner: str
    network: NetworkConfig
    database: DatabaseConfig
    pipeline: PipelineConfig
    serving: ServingConfig
    monitoring: MonitoringConfig
    domain: DomainConfig | None = None
    # Buckets, the database and secrets survive `cdk destroy` (RETAIN) in prod; dev cleans up.
    retain_data: bool = False
    termination_protection: bool = False
    log_retention: logs.RetentionDays = logs.RetentionDays.ONE_WEEK
    # Where documents live in the source bucket: the pipeline's source root (its first folder
    # below names the collection) and where the serving API presigns uploads
    # (`<prefix><collection>/<file>`).
    documents_prefix: str = "documents/"
    # Noncurrent object versions kept this long before S3 expires them.
    noncurrent_version_days: int = 7
    container_insights: bool = False
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        """Stack and resource name prefix: LoreChat-dev."""
        return f"LoreChat-{self.name}"

    @property
    def names(self) -> ResourceNames:
        return ResourceNames(environment=self.name, account=self.account, region=self.region)

    @property
    def removal_policy(self) -> RemovalPolicy:
        return RemovalPolicy.RETAIN if self.retain_data else RemovalPolicy.DESTROY

    @property
    def cloudfront_region(self) -> str:
        """CloudFront-scoped WAF web ACLs and CloudFront certificates live in us-east-1 only."""
        return "us-east-1"


# Replace the account ids (or pass `-c account=123456789012` to cdk) before deploying.
DEV = EnvironmentConfig(
    name="dev",
    account="111111111111",
    region="us-east-1",
    owner="platform-team",
    network=NetworkConfig(egress=Egress.PUBLIC_SUBNETS),
    database=DatabaseConfig(),
    pipeline=PipelineConfig(run=TaskSize(cpu=1024, memory_mib=4096)),
    serving=ServingConfig(cors_origins=("http://localhost:8000",)),
    monitoring=MonitoringConfig(
        alarm_email="lorechat-alerts@example.com",
        budget_email="lorechat-billing@example.com",
        monthly_budget_usd=200,
    ),
)

PROD = EnvironmentConfig(
    name="prod",
    account="222222222222",
    region="us-east-1",
    owner="platform-team",
    network=NetworkConfig(cidr="10.41.0.0/16", egress=Egress.NAT, nat_gateways=2),
    database=DatabaseConfig(
        instance_class="t4g.small",
        multi_az=True,
        backup_retention_days=7,
        deletion_protection=True,
    ),
    pipeline=PipelineConfig(),
    serving=ServingConfig(min_tasks=1, max_tasks=4),
    monitoring=MonitoringConfig(
        alarm_email="lorechat-alerts@example.com",
        budget_email="lorechat-billing@example.com",
        monthly_budget_usd=600,
    ),
    retain_data=True,
    termination_protection=True,
    noncurrent_version_days=30,
    container_insights=True,
)

ENVIRONMENTS: dict[str, EnvironmentConfig] = {config.name: config for config in (DEV, PROD)}


def environment_config(name: str) -> EnvironmentConfig:
    try:
        return ENVIRONMENTS[name]
    except KeyError:
        known = ", ".join(sorted(ENVIRONMENTS))
        raise ValueError(f"unknown environment {name!r}: use one of {known}") from None
