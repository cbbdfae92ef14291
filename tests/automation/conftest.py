"""Fixtures for the automation tests: an SQS queue fed by a moto bucket's S3 notifications."""

import uuid
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def sqs_client(moto_endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "sqs",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def queue_url(sqs_client: Any) -> Iterator[str]:
    # The moto server is shared by the whole session, so every test gets its own queue.
    url: str = sqs_client.create_queue(QueueName=f"source-events-{uuid.uuid4().hex[:12]}")[
        "QueueUrl"
    ]
    yield url
    sqs_client.delete_queue(QueueUrl=url)


@pytest.fixture
def notifying_bucket(s3_client: Any, sqs_client: Any, queue_url: str) -> str:
    bucket = f"lore-src-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    queue_arn = sqs_client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    s3_client.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}
            ]
        },
    )
    return bucket


# The pipeline fixtures are shared with the pipeline tests.
from tests.pipeline.conftest import corpus, make_pipeline  # noqa: E402, F401
