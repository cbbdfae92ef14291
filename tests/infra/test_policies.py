"""Rules that hold for every resource of every stack: tags, log retention, cdk-nag."""

import json
from pathlib import Path

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_sqs as sqs
from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

from infra.app import attach_compliance_checks
from infra.building_blocks.tagging import REQUIRED_TAG_KEYS
from tests.infra.conftest import Synthesized
from tests.infra.helpers import properties_of, resources


def _tag_property(resource_type: str) -> str | None:
    """Where the CloudFormation resource schema says this type keeps its tags, if anywhere."""
    if resource_type.startswith("Custom::") or resource_type.startswith("AWS::CDK::"):
        return None
    schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", resource_type).schema
    tagging = schema.get("tagging", {})
    if not tagging.get("taggable"):
        return None
    return str(tagging.get("tagProperty", "/properties/Tags")).rsplit("/", 1)[-1]


def _tags(value: object) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, list):
        return {item["Key"]: item["Value"] for item in value}
    return {}


def test_every_taggable_resource_carries_the_four_tags(every_environment: Synthesized) -> None:
    config = every_environment.config
    untagged = []
    checked = 0
    for stack in every_environment.deployment.stacks:
        function = stack.stack_name.rsplit("-", 1)[-1].lower()
        for logical_id, resource in resources(every_environment.template(stack)):
            tag_property = _tag_property(resource["Type"])
            if tag_property is None:
                continue
            checked += 1
            tags = _tags(resource.get("Properties", {}).get(tag_property))
            wanted = {
                "Environment": config.name,
                "Project": "lorechat",
                "Function": function,
                "Owner": config.owner,
            }
            if {key: tags.get(key) for key in REQUIRED_TAG_KEYS} != wanted:
                untagged.append(f"{stack.stack_name}/{logical_id} ({resource['Type']}): {tags}")
    assert checked > 80
    assert untagged == []


def test_every_log_group_keeps_one_week(every_environment: Synthesized) -> None:
    groups = [
        group
        for stack in every_environment.deployment.stacks
        for group in properties_of(every_environment.template(stack), "AWS::Logs::LogGroup")
    ]
    assert len(groups) >= 4  # flow logs, postgres, pipeline, serving
    assert {group.get("RetentionInDays") for group in groups} == {7}


def test_cdk_nag_aws_solutions_has_no_unacknowledged_finding(
    every_environment: Synthesized,
) -> None:
    """Synthesis succeeded (the fixture), and no validation plugin reports a finding."""
    report = every_environment.validation_report()
    findings = [
        f"{plugin['pluginName']}: {violation['ruleName']} at {construct['constructPath']}"
        for plugin in report["pluginReports"]
        for violation in plugin["violations"]
        for construct in violation["violatingConstructs"]
    ]
    assert findings == []
    assert all(plugin["conclusion"] == "success" for plugin in report["pluginReports"])


def test_the_checks_fail_synthesis_on_a_finding(tmp_path: Path) -> None:
    """A canary: the same checks the app attaches reject a queue without DLQ and TLS policy."""
    app = App(outdir=str(tmp_path))
    sqs.Queue(Stack(app, "Canary"), "Queue")
    attach_compliance_checks(app)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    (plugin,) = report["pluginReports"]
    assert plugin["pluginName"] == "AwsSolutions"
    assert {violation["ruleName"] for violation in plugin["violations"]} >= {
        "AwsSolutions-SQS3",
        "AwsSolutions-SQS4",
    }


def test_every_acknowledgement_says_why(every_environment: Synthesized) -> None:
    acknowledged: dict[str, str] = {}
    for stack in every_environment.deployment.stacks:
        for _, resource in resources(every_environment.template(stack)):
            nag = resource.get("Metadata", {}).get("cdk_nag", {})
            for rule in nag.get("rules_to_suppress", []):
                if rule["id"].startswith("AwsSolutions-"):
                    acknowledged[rule["id"]] = rule["reason"]
    assert acknowledged, "cdk-nag writes acknowledgements into the templates"
    for rule, reason in acknowledged.items():
        assert len(reason) >= 40, f"{rule}: {reason!r}"


@pytest.mark.parametrize(
    ("rule", "expected_in"),
    [
        ("AwsSolutions-RDS3", "dev"),
        ("AwsSolutions-RDS10", "dev"),
        ("AwsSolutions-ECS4", "dev"),
    ],
)
def test_dev_only_acknowledgements_do_not_reach_prod(
    dev: Synthesized, prod: Synthesized, rule: str, expected_in: str
) -> None:
    def acknowledged(synthesized: Synthesized) -> set[str]:
        return {
            item["id"]
            for stack in synthesized.deployment.stacks
            for _, resource in resources(synthesized.template(stack))
            for item in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
        }

    assert rule in acknowledged(dev)
    assert rule not in acknowledged(prod)
