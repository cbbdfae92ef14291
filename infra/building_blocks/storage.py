"""Buckets that are private, encrypted, TLS-only and logged, and the queue of their events."""

from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs
from constructs import Construct


class AccessLogBucket(Construct):
    """Receives S3 server access logs and load balancer logs; itself encrypted and TLS-only.

    Object ownership stays BUCKET_OWNER_PREFERRED because CloudFront's standard logging still
    writes through an ACL grant.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket_name: str,
        removal_policy: RemovalPolicy,
        expire_after: Duration,
    ) -> None:
        super().__init__(scope, construct_id)
        destroy = removal_policy is RemovalPolicy.DESTROY
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=bucket_name,
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-logs",
                    expiration=expire_after,
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
            removal_policy=removal_policy,
            auto_delete_objects=destroy,
        )


class SecureBucket(Construct):
    """A private data bucket: SSE-S3, public access blocked, TLS enforced by bucket policy,
    server access logs, versioning with noncurrent versions expired, stale multipart uploads
    aborted.

    SSE-S3 rather than a customer managed KMS key: every object read by the pipeline and
    the serving tasks would otherwise be a billed KMS request, and no cross-account reader
    needs key-policy control here.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket_name: str,
        access_logs: s3.IBucket,
        log_prefix: str,
        removal_policy: RemovalPolicy,
        noncurrent_version_expiration: Duration,
        cors: Sequence[s3.CorsRule] = (),
        versioned: bool = True,
    ) -> None:
        super().__init__(scope, construct_id)
        destroy = removal_policy is RemovalPolicy.DESTROY
        rules = [
            s3.LifecycleRule(
                id="abort-incomplete-uploads",
                abort_incomplete_multipart_upload_after=Duration.days(1),
            )
        ]
        if versioned:
            rules.append(
                s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    noncurrent_version_expiration=noncurrent_version_expiration,
                    expired_object_delete_marker=True,
                )
            )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=bucket_name,
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=versioned,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix=log_prefix,
            lifecycle_rules=rules,
            cors=list(cors) or None,
            removal_policy=removal_policy,
            auto_delete_objects=destroy,
        )


def upload_cors(origins: Sequence[str]) -> list[s3.CorsRule]:
    """Browsers upload straight into the source bucket with presigned PUTs or POST policies."""
    return [
        s3.CorsRule(
            allowed_methods=[s3.HttpMethods.PUT, s3.HttpMethods.POST],
            allowed_origins=list(origins) or ["*"],
            allowed_headers=["*"],
            exposed_headers=["ETag", "x-amz-version-id"],
            max_age=3000,
        )
    ]


class ObjectEventQueue(Construct):
    """S3 object-created and object-removed events under one prefix of a bucket, queued for the
    event sensor.

    Messages that fail `max_receive_count` times move to a dead-letter queue kept for 14 days.
    Both queues are encrypted with SQS-managed keys (S3 can publish to those without a key
    policy) and refuse non-TLS requests.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.Bucket,
        key_prefix: str,
        queue_name: str,
        dead_letter_queue_name: str,
        visibility_timeout_seconds: int = 300,
        max_receive_count: int = 5,
    ) -> None:
        super().__init__(scope, construct_id)
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetters",
            queue_name=dead_letter_queue_name,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            queue_name=queue_name,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=Duration.seconds(visibility_timeout_seconds),
            retention_period=Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letter_queue, max_receive_count=max_receive_count
            ),
        )
        destination = s3n.SqsDestination(self.queue)
        documents = s3.NotificationKeyFilter(prefix=key_prefix)
        bucket.add_event_notification(s3.EventType.OBJECT_CREATED, destination, documents)
        bucket.add_event_notification(s3.EventType.OBJECT_REMOVED, destination, documents)
