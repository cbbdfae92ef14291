"""Small readers over synthesized templates (dicts), for checks that span many resources."""

import json
from collections.abc import Iterator
from typing import Any, cast

from aws_cdk import CfnElement, Stack
from aws_cdk.assertions import Template
from constructs import IConstruct


def resources(template: Template, resource_type: str | None = None) -> Iterator[tuple[str, Any]]:
    for logical_id, resource in template.to_json()["Resources"].items():
        if resource_type is None or resource["Type"] == resource_type:
            yield logical_id, resource


def properties_of(template: Template, resource_type: str) -> list[dict[str, Any]]:
    return [resource.get("Properties", {}) for _, resource in resources(template, resource_type)]


def only(items: list[Any]) -> Any:
    assert len(items) == 1, f"expected exactly one, got {len(items)}"
    return items[0]


def container(template: Template, name: str) -> dict[str, Any]:
    for properties in properties_of(template, "AWS::ECS::TaskDefinition"):
        for definition in properties["ContainerDefinitions"]:
            if definition["Name"] == name:
                return definition
    raise AssertionError(f"no container {name!r}")


def environment(definition: dict[str, Any]) -> dict[str, Any]:
    return {item["Name"]: item["Value"] for item in definition.get("Environment", [])}


def secrets(definition: dict[str, Any]) -> dict[str, Any]:
    return {item["Name"]: item["ValueFrom"] for item in definition.get("Secrets", [])}


def policy_statements(template: Template) -> list[dict[str, Any]]:
    statements = []
    for properties in properties_of(template, "AWS::IAM::Policy"):
        statements += properties["PolicyDocument"]["Statement"]
    return statements


def refers_to(value: Any, construct: IConstruct) -> bool:
    """Whether a template value reads `construct` of another stack (a weak cross-stack read)."""
    stack = Stack.of(construct)
    element = cast(CfnElement, construct.node.default_child)
    text = json.dumps(value)
    return f'"StackName": "{stack.stack_name}"' in text and stack.get_logical_id(element) in text


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
