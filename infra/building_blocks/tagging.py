"""The tagging strategy: Environment, Project, Function and Owner on every taggable resource."""

from collections.abc import Mapping

import jsii
from aws_cdk import IAspect, Tag
from constructs import IConstruct

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
        for tag in self._tags:
            tag.visit(node)
