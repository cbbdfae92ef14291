"""cdk-nag acknowledgements: every one names the exact finding and says why it is accepted."""

from collections.abc import Iterable

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct

# What CDK's bucket grants put in a policy: wildcard action families that S3 needs as a set
# (e.g. GetObject + GetObjectVersion, List + ListBucketVersions) on objects of the bucket.
S3_READ_ACTIONS = ("s3:GetObject*", "s3:GetBucket*", "s3:List*")
S3_WRITE_ACTIONS = ("s3:Abort*", "s3:DeleteObject*")


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    if len(reason) < 40:
        raise ValueError(f"acknowledging {rule} needs a real reason, not {reason!r}")
    Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))


def acknowledge_wildcards(
    scope: IConstruct,
    *,
    actions: Iterable[str] = (),
    resources: Iterable[str] = (),
    reason: str,
) -> None:
    """AwsSolutions-IAM5 findings, one per wildcard action and per wildcard resource."""
    for action in actions:
        acknowledge(scope, f"AwsSolutions-IAM5[Action::{action}]", reason)
    for resource in resources:
        acknowledge(scope, f"AwsSolutions-IAM5[Resource::{resource}]", reason)
