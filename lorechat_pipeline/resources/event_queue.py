"""The SQS queue that receives the source bucket's S3 event notifications (event mode)."""

from typing import Any

import boto3
import dagster as dg


class EventQueueResource(dg.ConfigurableResource):
    queue_url: str
    endpoint_url: str | None = None
    region_name: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    # Messages drained per sensor tick; the rest wait for the next tick.
    max_messages_per_tick: int = 1000

    def get_client(self) -> Any:
        return boto3.client(
            "sqs",
            endpoint_url=self.endpoint_url,
            region_name=self.region_name,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
        )
