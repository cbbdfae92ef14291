"""Dashboard, alarms to an encrypted SNS topic, and the monthly budget."""

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_budgets as budgets
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_rds as rds
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from lorechat_pipeline.core.metrics import (
    DOCUMENTS_PROCESSED,
    DOCUMENTS_QUARANTINED,
    NAMESPACE,
    RUN_FAILURES,
)

FIVE_MINUTES = Duration.minutes(5)


def pipeline_metric(name: str, period: Duration = FIVE_MINUTES) -> cloudwatch.Metric:
    """A metric the pipeline emits as EMF (lorechat_pipeline/core/metrics.py): no dimensions."""
    return cloudwatch.Metric(namespace=NAMESPACE, metric_name=name, statistic="Sum", period=period)


class AlarmTopic(Construct):
    """An SNS topic for alarms, encrypted with a customer managed key CloudWatch may use
    (the AWS managed SNS key cannot grant CloudWatch), TLS-only, with an email subscription."""

    def __init__(self, scope: Construct, construct_id: str, *, email: str) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description="Encrypts the LoreChat alarm topic",
            enable_key_rotation=True,
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
            )
        )
        self.topic = sns.Topic(self, "Topic", master_key=self.key, enforce_ssl=True)
        self.topic.add_subscription(subscriptions.EmailSubscription(email))
        self.action = cw_actions.SnsAction(self.topic)


@dataclass(frozen=True, kw_only=True)
class ServingSignals:
    load_balancer: elbv2.ApplicationLoadBalancer
    target_group: elbv2.ApplicationTargetGroup
    service: ecs.FargateService


@dataclass(frozen=True, kw_only=True)
class PipelineSignals:
    services: Sequence[ecs.FargateService]
    database: rds.IDatabaseInstance
    dead_letter_queue: sqs.IQueue


class OperationsDashboard(Construct):
    """One dashboard for serving and pipeline, and the alarms that page someone."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        dashboard_name: str,
        serving: ServingSignals,
        pipeline: PipelineSignals,
        alarm_action: cloudwatch.IAlarmAction,
        latency_p90_seconds: float,
        server_errors_per_5_minutes: int,
    ) -> None:
        super().__init__(scope, construct_id)
        alb = serving.load_balancer.metrics
        latency = {
            stat: alb.target_response_time(statistic=stat, period=FIVE_MINUTES, label=stat)
            for stat in ("p50", "p90", "p99")
        }
        target_5xx = alb.http_code_target(
            elbv2.HttpCodeTarget.TARGET_5XX_COUNT, period=FIVE_MINUTES, label="targets 5xx"
        )
        elb_5xx = alb.http_code_elb(
            elbv2.HttpCodeElb.ELB_5XX_COUNT, period=FIVE_MINUTES, label="load balancer 5xx"
        )
        server_errors = cloudwatch.MathExpression(
            expression="FILL(t, 0) + FILL(e, 0)",
            using_metrics={"t": target_5xx, "e": elb_5xx},
            label="5xx (targets + load balancer)",
            period=FIVE_MINUTES,
        )
        requests = alb.request_count(period=FIVE_MINUTES, label="requests")
        # Built from the two full names (plain attributes) rather than target_group.metrics,
        # which derives the load balancer name by splitting a listener ARN across stacks.
        healthy = cloudwatch.Metric(
            namespace="AWS/ApplicationELB",
            metric_name="HealthyHostCount",
            dimensions_map={
                "LoadBalancer": serving.load_balancer.load_balancer_full_name,
                "TargetGroup": serving.target_group.target_group_full_name,
            },
            period=Duration.minutes(1),
            statistic="Minimum",
            label="healthy serving tasks",
        )
        cpu = serving.service.metric_cpu_utilization(period=FIVE_MINUTES, label="serving CPU %")
        memory = serving.service.metric_memory_utilization(
            period=FIVE_MINUTES, label="serving memory %"
        )
        processed = pipeline_metric(DOCUMENTS_PROCESSED)
        quarantined = pipeline_metric(DOCUMENTS_QUARANTINED)
        run_failures = pipeline_metric(RUN_FAILURES)
        dead_letters = pipeline.dead_letter_queue.metric_approximate_number_of_messages_visible(
            period=FIVE_MINUTES, statistic="Maximum"
        )

        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=dashboard_name,
            default_interval=Duration.hours(24),
        )
        self.dashboard.add_widgets(
            cloudwatch.TextWidget(markdown="## Serving", width=24, height=1),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Serving latency (target response time, s)",
                left=list(latency.values()),
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Serving 5xx and requests", left=[server_errors], right=[requests], width=8
            ),
            cloudwatch.GraphWidget(
                title="Serving CPU and memory (%)",
                left=[cpu, memory],
                left_y_axis=cloudwatch.YAxisProps(min=0, max=100),
                width=8,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.TextWidget(markdown="## Pipeline", width=24, height=1),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Documents processed and quarantined",
                left=[processed, quarantined],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Run failures and dead-lettered events",
                left=[run_failures],
                right=[dead_letters],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Dagster services CPU and memory (%)",
                left=[
                    metric
                    for service in pipeline.services
                    for metric in (
                        service.metric_cpu_utilization(period=FIVE_MINUTES),
                        service.metric_memory_utilization(period=FIVE_MINUTES),
                    )
                ],
                left_y_axis=cloudwatch.YAxisProps(min=0, max=100),
                width=8,
            ),
        )

        not_breaching = cloudwatch.TreatMissingData.NOT_BREACHING
        self.alarms = [
            server_errors.create_alarm(
                self,
                "Serving5xx",
                alarm_description="Serving answered with 5xx errors",
                threshold=server_errors_per_5_minutes,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=not_breaching,
            ),
            latency["p90"].create_alarm(
                self,
                "ServingLatencyP90",
                alarm_description=f"Serving p90 latency above {latency_p90_seconds}s for 15 min",
                threshold=latency_p90_seconds,
                evaluation_periods=3,
                treat_missing_data=not_breaching,
            ),
            healthy.create_alarm(
                self,
                "ServingNoHealthyTask",
                alarm_description="No healthy serving task behind the load balancer",
                threshold=1,
                evaluation_periods=3,
                comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
            ),
            cpu.create_alarm(
                self,
                "ServingCpuHigh",
                alarm_description="Serving CPU above 90% for 15 min (autoscaling exhausted?)",
                threshold=90,
                evaluation_periods=3,
            ),
            memory.create_alarm(
                self,
                "ServingMemoryHigh",
                alarm_description="Serving memory above 90% for 15 min",
                threshold=90,
                evaluation_periods=3,
            ),
            run_failures.create_alarm(
                self,
                "PipelineRunFailures",
                alarm_description="A Dagster run of the pipeline failed",
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=not_breaching,
            ),
            pipeline_metric(DOCUMENTS_QUARANTINED, Duration.hours(1)).create_alarm(
                self,
                "PipelineQuarantineSpike",
                alarm_description="More than 10 documents quarantined within an hour",
                threshold=10,
                evaluation_periods=1,
                treat_missing_data=not_breaching,
            ),
            dead_letters.create_alarm(
                self,
                "PipelineDeadLetters",
                alarm_description="S3 events the sensor could not handle are in the DLQ",
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=not_breaching,
            ),
            pipeline.database.metric_cpu_utilization(period=FIVE_MINUTES).create_alarm(
                self,
                "DatabaseCpuHigh",
                alarm_description="Dagster database CPU above 80% for 15 min",
                threshold=80,
                evaluation_periods=3,
            ),
            pipeline.database.metric_free_storage_space(period=FIVE_MINUTES).create_alarm(
                self,
                "DatabaseStorageLow",
                alarm_description="Dagster database has less than 2 GiB free",
                threshold=2 * 1024**3,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            ),
        ]
        for alarm in self.alarms:
            alarm.add_alarm_action(alarm_action)
            alarm.add_ok_action(alarm_action)


class CostBudget(Construct):
    """A monthly cost budget for the account: email at 80% actual and 100% forecast spend."""

    def __init__(
        self, scope: Construct, construct_id: str, *, name: str, amount_usd: int, email: str
    ) -> None:
        super().__init__(scope, construct_id)
        subscribers = [
            budgets.CfnBudget.SubscriberProperty(subscription_type="EMAIL", address=email)
        ]

        def notify(
            kind: str, percent: int
        ) -> budgets.CfnBudget.NotificationWithSubscribersProperty:
            return budgets.CfnBudget.NotificationWithSubscribersProperty(
                notification=budgets.CfnBudget.NotificationProperty(
                    notification_type=kind,
                    comparison_operator="GREATER_THAN",
                    threshold=percent,
                    threshold_type="PERCENTAGE",
                ),
                subscribers=subscribers,
            )

        self.budget = budgets.CfnBudget(
            self,
            "Budget",
            budget=budgets.CfnBudget.BudgetDataProperty(
                budget_name=name,
                budget_type="COST",
                time_unit="MONTHLY",
                budget_limit=budgets.CfnBudget.SpendProperty(amount=amount_usd, unit="USD"),
            ),
            notifications_with_subscribers=[notify("ACTUAL", 80), notify("FORECASTED", 100)],
        )
