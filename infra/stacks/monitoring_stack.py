from aws_cdk import Stack
from constructs import Construct

from infra.building_blocks.observability import (
    AlarmTopic,
    CostBudget,
    OperationsDashboard,
    PipelineSignals,
    ServingSignals,
)
from infra.config import EnvironmentConfig
from infra.stacks.data_stack import DataStack
from infra.stacks.pipeline_stack import PipelineStack
from infra.stacks.serving_stack import ServingStack


class MonitoringStack(Stack):
    """The dashboard, the alarms and where they go, and the budget."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        data: DataStack,
        pipeline: PipelineStack,
        serving: ServingStack,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        monitoring = config.monitoring
        self.alarm_topic = AlarmTopic(self, "Alarms", email=monitoring.alarm_email)
        self.dashboard = OperationsDashboard(
            self,
            "Operations",
            dashboard_name=f"{config.prefix}-operations",
            serving=ServingSignals(
                load_balancer=serving.service.load_balancer,
                target_group=serving.service.target_group,
                service=serving.service.service,
            ),
            pipeline=PipelineSignals(
                services=pipeline.dagster.services,
                database=data.database.instance,
                dead_letter_queue=data.source_events.dead_letter_queue,
            ),
            alarm_action=self.alarm_topic.action,
            latency_p90_seconds=monitoring.latency_p90_seconds,
            server_errors_per_5_minutes=monitoring.server_errors_per_5_minutes,
        )
        self.budget = CostBudget(
            self,
            "Budget",
            name=f"{config.prefix}-monthly",
            amount_usd=monitoring.monthly_budget_usd,
            email=monitoring.budget_email,
        )
