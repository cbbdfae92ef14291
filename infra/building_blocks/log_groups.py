"""Log groups with the environment's retention, and the awslogs driver that writes into them."""

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from constructs import Construct


def container_log_group(
    scope: Construct,
    construct_id: str,
    *,
    retention: logs.RetentionDays,
    log_group_name: str | None = None,
) -> logs.LogGroup:
    # Logs are operational data, not the product's state: they go with the stack.
    return logs.LogGroup(
        scope,
        construct_id,
        log_group_name=log_group_name,
        retention=retention,
        removal_policy=RemovalPolicy.DESTROY,
    )


def awslogs(log_group: logs.ILogGroup, stream_prefix: str) -> ecs.LogDriver:
    # Non-blocking: a slow CloudWatch Logs endpoint must never stall the application's stdout.
    return ecs.LogDrivers.aws_logs(
        stream_prefix=stream_prefix,
        log_group=log_group,
        mode=ecs.AwsLogDriverMode.NON_BLOCKING,
    )
