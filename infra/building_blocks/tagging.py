"""The tagging strategy: Environment, Project, Function and Owner on every taggable resource."""

from collections.abc import Mapping

import jsii
from aws_cdk import CfnResource, IAspect, Tag, TagManager
from constructs import IConstruct

# CDK's framework providers (CustomResourceProvider: the handlers behind VPC default-SG
# restriction and S3 auto-delete) are raw CfnResources outside TagManager; their types keep
# tags as a Key/Value list, so the aspect writes that list itself.
_RAW_TAGGABLE_TYPES = frozenset({"AWS::IAM::Role", "AWS::Lambda::Function"})

REQUIRED_TAG_KEYS = ("Environment", "Project", "Function", "Owner")


@jsii.implements(IAspect)
class RequiredTags:
    """One aspect that stamps the four required tags (and any extra ones) on every resource.

    It delegates to CDK's own `Tag` aspect per key, so L1 resources of every kind (tag lists,
    tag maps, `TagManager`-backed L2s) are covered the same way `Tags.of()` covers them.
    """

    def __init__(
        self,
        *,
        environment: str,
        project: str,
        function: str,
        owner: str,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        values = {
            "Environment": environment,
            "Project": project,
            "Function": function,
            "Owner": owner,
            **(extra or {}),
        }
        for key, value in values.items():
            if not value:
                raise ValueError(f"tag {key} needs a value")
        self.values = values
        self._tags = [Tag(key, value) for key, value in values.items()]

    def visit(self, node: IConstruct) -> None:
        if (
            isinstance(node, CfnResource)
            and not TagManager.is_taggable(node)
            and node.cfn_resource_type in _RAW_TAGGABLE_TYPES
        ):
            node.add_property_override(
                "Tags", [{"Key": key, "Value": value} for key, value in self.values.items()]
            )
            return
        for tag in self._tags:
            tag.visit(node)
