from aws_cdk.assertions import Match

from tests.infra.conftest import Synthesized
from tests.infra.helpers import as_list, only, properties_of, resources


def _buckets(synthesized: Synthesized) -> dict[str, dict]:
    template = synthesized.template(synthesized.deployment.data)
    return {
        properties["BucketName"]: properties
        for properties in properties_of(template, "AWS::S3::Bucket")
    }


def test_every_bucket_is_encrypted_private_and_tls_only(every_environment: Synthesized) -> None:
    template = every_environment.template(every_environment.deployment.data)
    buckets = properties_of(template, "AWS::S3::Bucket")
    assert len(buckets) == 4  # source, processed, index, access logs
    for bucket in buckets:
        rule = only(bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"])
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        assert bucket["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
    policies = properties_of(template, "AWS::S3::BucketPolicy")
    assert len(policies) == 4
    for policy in policies:
        statements = policy["PolicyDocument"]["Statement"]
        assert any(
            statement["Effect"] == "Deny"
            and statement.get("Condition", {}).get("Bool") == {"aws:SecureTransport": "false"}
            for statement in statements
        )


def test_data_buckets_are_versioned_logged_and_expire_old_versions(dev: Synthesized) -> None:
    names = dev.config.names
    buckets = _buckets(dev)
    for name in (names.source_bucket, names.processed_bucket, names.index_bucket):
        bucket = buckets[name]
        assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
        assert "DestinationBucketName" in bucket["LoggingConfiguration"]
        rules = {rule["Id"]: rule for rule in bucket["LifecycleConfiguration"]["Rules"]}
        assert rules["abort-incomplete-uploads"]["AbortIncompleteMultipartUpload"] == {
            "DaysAfterInitiation": 1
        }
        assert rules["expire-noncurrent-versions"]["NoncurrentVersionExpiration"] == {
            "NoncurrentDays": dev.config.noncurrent_version_days
        }


def test_source_bucket_allows_browser_uploads_with_presigned_requests(dev: Synthesized) -> None:
    bucket = _buckets(dev)[dev.config.names.source_bucket]
    rule = only(bucket["CorsConfiguration"]["CorsRules"])
    assert set(rule["AllowedMethods"]) == {"PUT", "POST"}
    assert rule["AllowedOrigins"] == list(dev.config.serving.cors_origins)
    assert "ETag" in rule["ExposedHeaders"]


def test_object_events_go_to_a_queue_with_a_dead_letter_queue(dev: Synthesized) -> None:
    template = dev.template(dev.deployment.data)
    names = dev.config.names
    template.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "QueueName": names.events_queue,
            "SqsManagedSseEnabled": True,
            "RedrivePolicy": {
                "deadLetterTargetArn": Match.any_value(),
                "maxReceiveCount": 5,
            },
        },
    )
    template.has_resource_properties(
        "AWS::SQS::Queue",
        {"QueueName": names.events_dead_letter_queue, "MessageRetentionPeriod": 14 * 24 * 3600},
    )
    notifications = only([r for _, r in resources(template, "Custom::S3BucketNotifications")])[
        "Properties"
    ]["NotificationConfiguration"]["QueueConfigurations"]
    assert {item["Events"][0] for item in notifications} == {
        "s3:ObjectCreated:*",
        "s3:ObjectRemoved:*",
    }
    for item in notifications:
        assert item["Filter"]["Key"]["FilterRules"] == [
            {"Name": "prefix", "Value": dev.config.documents_prefix}
        ]
    # S3 may send to the queue, and only for this bucket; nobody may use it without TLS.
    statements = [
        statement
        for policy in properties_of(template, "AWS::SQS::QueuePolicy")
        for statement in policy["PolicyDocument"]["Statement"]
    ]
    assert any(
        statement["Principal"] == {"Service": "s3.amazonaws.com"}
        and "sqs:SendMessage" in as_list(statement["Action"])
        and "aws:SourceArn" in statement["Condition"]["ArnLike"]
        for statement in statements
    )
    assert any(
        statement["Effect"] == "Deny"
        and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for statement in statements
    )


def test_secrets_hold_placeholders_only(dev: Synthesized) -> None:
    template = dev.template(dev.deployment.data)
    names = dev.config.names
    template.has_resource_properties(
        "AWS::SecretsManager::Secret",
        {
            "Name": names.upstash_secret,
            "GenerateSecretString": {
                "SecretStringTemplate": '{"UPSTASH_VECTOR_REST_URL": ""}',
                "GenerateStringKey": "UPSTASH_VECTOR_REST_TOKEN",
            },
        },
    )
    api_keys = only(
        [
            p
            for p in properties_of(template, "AWS::SecretsManager::Secret")
            if p["Name"] == names.api_keys_secret
        ]
    )
    assert api_keys["SecretString"] == (
        '[{"name": "placeholder", "sha256": "' + "0" * 64 + '", "collections": []}]'
    )


def test_database_is_private_encrypted_postgres(dev: Synthesized, prod: Synthesized) -> None:
    dev.template(dev.deployment.data).has_resource_properties(
        "AWS::RDS::DBInstance",
        {
            "Engine": "postgres",
            "EngineVersion": Match.string_like_regexp(r"^17\."),
            "StorageEncrypted": True,
            "PubliclyAccessible": False,
            "DBName": "dagster",
            "MultiAZ": False,
            "EnableCloudwatchLogsExports": ["postgresql"],
        },
    )
    dev.template(dev.deployment.data).has_resource_properties(
        "AWS::RDS::DBParameterGroup", {"Parameters": {"rds.force_ssl": "1"}}
    )
    prod.template(prod.deployment.data).has_resource_properties(
        "AWS::RDS::DBInstance",
        {"MultiAZ": True, "DeletionProtection": True, "BackupRetentionPeriod": 7},
    )


def test_prod_retains_state_and_dev_cleans_up(dev: Synthesized, prod: Synthesized) -> None:
    prod_data = prod.template(prod.deployment.data)
    prod_data.has_resource("AWS::S3::Bucket", {"DeletionPolicy": "Retain"})
    prod_data.has_resource("AWS::RDS::DBInstance", {"DeletionPolicy": "Snapshot"})
    prod_data.has_resource("AWS::SecretsManager::Secret", {"DeletionPolicy": "Retain"})
    dev_data = dev.template(dev.deployment.data)
    for _, bucket in resources(dev_data, "AWS::S3::Bucket"):
        assert bucket["DeletionPolicy"] == "Delete"
    assert prod.deployment.data.termination_protection
    assert not dev.deployment.data.termination_protection
