"""The data stack's buckets and queue as seen from a compute stack: imported by their names.

Grants on these objects put literal ARNs into the compute stack's IAM policies and add nothing
to the data stack, so compute stacks come and go without touching stateful resources.
"""

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import ResourceNames


class DataAccess(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, names: ResourceNames) -> None:
        super().__init__(scope, construct_id)
        self.names = names
        self.source = s3.Bucket.from_bucket_name(self, "Source", names.source_bucket)
        self.processed = s3.Bucket.from_bucket_name(self, "Processed", names.processed_bucket)
        self.index = s3.Bucket.from_bucket_name(self, "Index", names.index_bucket)
        self.events_queue = sqs.Queue.from_queue_arn(
            self,
            "Events",
            Stack.of(self).format_arn(
                service="sqs",
                resource=names.events_queue,
                arn_format=ArnFormat.NO_RESOURCE_NAME,
            ),
        )

    def s3_uri(self, bucket: s3.IBucket, path: str = "") -> str:
        return f"s3://{bucket.bucket_name}/{path}"
