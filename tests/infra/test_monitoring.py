import json

from aws_cdk.assertions import Match

from lorechat_pipeline.core.metrics import NAMESPACE, PIPELINE_METRICS, RUN_FAILURES
from tests.infra.conftest import Synthesized
from tests.infra.helpers import only, properties_of


def _dashboard_body(synthesized: Synthesized) -> str:
    template = synthesized.template(synthesized.deployment.monitoring)
    return json.dumps(only(properties_of(template, "AWS::CloudWatch::Dashboard"))["DashboardBody"])


def test_dashboard_shows_serving_and_pipeline_signals(dev: Synthesized) -> None:
    body = _dashboard_body(dev)
    for signal in (
        "TargetResponseTime",
        "HTTPCode_Target_5XX_Count",
        "HTTPCode_ELB_5XX_Count",
        "CPUUtilization",
        "MemoryUtilization",
        NAMESPACE,
        *PIPELINE_METRICS,
        "ApproximateNumberOfMessagesVisible",
    ):
        assert signal in body, signal
    for percentile in ("p50", "p90", "p99"):
        assert f'\\"stat\\":\\"{percentile}\\"' in body


def test_every_alarm_notifies_the_topic_on_alarm_and_recovery(dev: Synthesized) -> None:
    template = dev.template(dev.deployment.monitoring)
    alarms = properties_of(template, "AWS::CloudWatch::Alarm")
    assert len(alarms) >= 10
    for alarm in alarms:
        assert len(alarm["AlarmActions"]) == 1
        assert alarm["AlarmActions"] == alarm["OKActions"]
    topic_ids = {json.dumps(alarm["AlarmActions"]) for alarm in alarms}
    assert len(topic_ids) == 1


def test_run_failures_alarm_reads_the_emf_metric_without_dimensions(dev: Synthesized) -> None:
    dev.template(dev.deployment.monitoring).has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": NAMESPACE,
            "MetricName": RUN_FAILURES,
            "Statistic": "Sum",
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
            "Dimensions": Match.absent(),
        },
    )


def test_serving_alarms_cover_5xx_latency_and_health(dev: Synthesized) -> None:
    template = dev.template(dev.deployment.monitoring)
    alarms = properties_of(template, "AWS::CloudWatch::Alarm")
    described = " ".join(alarm["AlarmDescription"] for alarm in alarms)
    for topic in ("5xx", "p90 latency", "No healthy serving task", "DLQ", "database"):
        assert topic.lower() in described.lower(), topic
    latency = only([alarm for alarm in alarms if "p90 latency" in alarm["AlarmDescription"]])
    assert latency["Threshold"] == dev.config.monitoring.latency_p90_seconds
    (query,) = latency["Metrics"]
    assert query["MetricStat"]["Metric"]["MetricName"] == "TargetResponseTime"
    assert query["MetricStat"]["Stat"] == "p90"


def test_alarm_topic_is_encrypted_tls_only_and_emails(dev: Synthesized) -> None:
    template = dev.template(dev.deployment.monitoring)
    template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})
    template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    template.has_resource_properties(
        "AWS::SNS::Subscription",
        {"Protocol": "email", "Endpoint": dev.config.monitoring.alarm_email},
    )
    template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            }
        },
    )


def test_budget_emails_at_80_percent_actual_and_100_percent_forecast(
    dev: Synthesized, prod: Synthesized
) -> None:
    for synthesized in (dev, prod):
        monitoring = synthesized.config.monitoring
        budget = only(
            properties_of(
                synthesized.template(synthesized.deployment.monitoring), "AWS::Budgets::Budget"
            )
        )
        assert budget["Budget"]["BudgetLimit"] == {
            "Amount": monitoring.monthly_budget_usd,
            "Unit": "USD",
        }
        assert budget["Budget"]["TimeUnit"] == "MONTHLY"
        notifications = {
            (n["Notification"]["NotificationType"], n["Notification"]["Threshold"]): n[
                "Subscribers"
            ]
            for n in budget["NotificationsWithSubscribers"]
        }
        assert set(notifications) == {("ACTUAL", 80), ("FORECASTED", 100)}
        for subscribers in notifications.values():
            assert subscribers == [
                {"SubscriptionType": "EMAIL", "Address": monitoring.budget_email}
            ]
