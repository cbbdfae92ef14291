from aws_cdk.assertions import Match

from infra.building_blocks.dagster import (
    CODE_SERVER_PORT,
    COMPUTE_LOG_BUCKET_ENV,
    COMPUTE_LOG_PREFIX,
    RUN_CONTAINER_NAME,
    RUN_TASK_DEFINITION_ENV,
    WEBSERVER_PORT,
)
from tests.infra.conftest import Synthesized
from tests.infra.helpers import (
    as_list,
    container,
    environment,
    policy_statements,
    properties_of,
    refers_to,
    secrets,
)

PIPELINE_ENVIRONMENT = {
    "LORECHAT_ENVIRONMENT",
    "LORECHAT_SOURCE",
    "LORECHAT_PROCESSED",
    "LORECHAT_INDEX_URI",
    "LORECHAT_AWS_REGION",
    "LORECHAT_SQS_QUEUE_URL",
    "LORECHAT_VECTOR_STORE",
    "LORECHAT_EMBEDDER",
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_DB",
}
PIPELINE_SECRETS = {
    "UPSTASH_VECTOR_REST_URL",
    "UPSTASH_VECTOR_REST_TOKEN",
    "DAGSTER_PG_USERNAME",
    "DAGSTER_PG_PASSWORD",
}


def test_webserver_daemon_and_code_server_are_fargate_services(dev: Synthesized) -> None:
    template = dev.template(dev.deployment.pipeline)
    services = properties_of(template, "AWS::ECS::Service")
    assert len(services) == 3
    for service in services:
        # EcsRunLauncher copies the launching task's launch type; capacity providers break it.
        assert service["LaunchType"] == "FARGATE"
        assert service["DesiredCount"] == 1
        assert service["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {
            "Enable": True,
            "Rollback": True,
        }
    commands = {
        name: container(template, name)["Command"]
        for name in ("webserver", "daemon", "code-server")
    }
    assert commands["webserver"][0] == "dagster-webserver"
    assert commands["daemon"][:2] == ["dagster-daemon", "run"]
    assert commands["code-server"][:3] == ["dagster", "api", "grpc"]
    assert "lorechat_pipeline.definitions" in commands["code-server"]
    for name in ("webserver", "daemon"):
        command = commands[name]
        assert command[command.index("--grpc-port") + 1] == str(CODE_SERVER_PORT)
        assert command[command.index("--grpc-host") + 1].startswith("code.")


def test_code_server_is_discoverable_and_health_checked(dev: Synthesized) -> None:
    template = dev.template(dev.deployment.pipeline)
    template.has_resource_properties(
        "AWS::ServiceDiscovery::Service",
        {"Name": "code", "DnsConfig": {"DnsRecords": [{"Type": "A", "TTL": 10}]}},
    )
    health = container(template, "code-server")["HealthCheck"]["Command"]
    assert "grpc-health-check" in health


def test_runs_are_launched_as_tasks_of_the_run_definition(dev: Synthesized) -> None:
    template = dev.template(dev.deployment.pipeline)
    run = container(template, RUN_CONTAINER_NAME)
    assert set(environment(run)) >= PIPELINE_ENVIRONMENT
    assert set(secrets(run)) >= PIPELINE_SECRETS
    assert environment(run)["LORECHAT_ENVIRONMENT"] == "aws"
    template.has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "Family": f"{dev.config.prefix}-run",
            "Cpu": str(dev.config.pipeline.run.cpu),
            "Memory": str(dev.config.pipeline.run.memory_mib),
            "RequiresCompatibilities": ["FARGATE"],
        },
    )
    # The daemon and the webserver find the run definition through the variable dagster.yaml
    # names.
    for name in ("daemon", "webserver", "code-server"):
        assert RUN_TASK_DEFINITION_ENV in environment(container(template, name))


def test_environment_points_at_the_data_stack_resources(dev: Synthesized) -> None:
    template = dev.template(dev.deployment.pipeline)
    run = environment(container(template, RUN_CONTAINER_NAME))
    names = dev.config.names
    # Uploads land in <documents prefix><collection>/: the prefix is the pipeline's source root.
    assert run["LORECHAT_SOURCE"] == f"s3://{names.source_bucket}/{dev.config.documents_prefix}"
    assert run["LORECHAT_PROCESSED"] == f"s3://{names.processed_bucket}/"
    assert run["LORECHAT_INDEX_URI"] == f"s3://{names.index_bucket}/index"
    assert run["LORECHAT_AWS_REGION"] == "us-east-1"
    queue_url = str(run["LORECHAT_SQS_QUEUE_URL"])
    assert names.events_queue in queue_url
    assert run["DAGSTER_PG_PORT"] == "5432"


def test_every_dagster_container_gets_what_dagster_yaml_reads(dev: Synthesized) -> None:
    template = dev.template(dev.deployment.pipeline)
    for name in (RUN_CONTAINER_NAME, "code-server", "daemon", "webserver"):
        definition = container(template, name)
        values = environment(definition)
        assert values[COMPUTE_LOG_BUCKET_ENV] == dev.config.names.processed_bucket
        assert values["AWS_REGION"] == "us-east-1"
        assert {"DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB"} <= set(values)
        assert {"DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD"} <= set(secrets(definition))
    processed = next(
        bucket
        for bucket in properties_of(dev.template(dev.deployment.data), "AWS::S3::Bucket")
        if bucket["BucketName"] == dev.config.names.processed_bucket
    )
    rules = {rule["Id"]: rule for rule in processed["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-dagster-compute-logs"]["Prefix"] == COMPUTE_LOG_PREFIX
    assert rules["expire-dagster-compute-logs"]["ExpirationInDays"] == 30


def test_credentials_come_from_secrets_manager_never_plain_environment(
    dev: Synthesized,
) -> None:
    template = dev.template(dev.deployment.pipeline)
    for name in (RUN_CONTAINER_NAME, "code-server"):
        definition = container(template, name)
        assert not {"UPSTASH_VECTOR_REST_TOKEN", "DAGSTER_PG_PASSWORD"} & set(
            environment(definition)
        )
        values = secrets(definition)
        token = values["UPSTASH_VECTOR_REST_TOKEN"]
        assert refers_to(token, dev.deployment.data.secrets.upstash)
        assert token["Fn::Join"][1][-1] == ":UPSTASH_VECTOR_REST_TOKEN::"
        password = values["DAGSTER_PG_PASSWORD"]
        assert refers_to(password, dev.deployment.data.database.secret)  # its attachment
        assert password["Fn::Join"][1][-1] == ":password::"


def test_daemon_may_launch_only_run_tasks_in_its_cluster(dev: Synthesized) -> None:
    statements = policy_statements(dev.template(dev.deployment.pipeline))
    run_task = [s for s in statements if "ecs:RunTask" in as_list(s["Action"])]
    assert len(run_task) == 1
    statement = run_task[0]
    assert statement["Resource"].endswith(f":task-definition/{dev.config.prefix}-run:*")
    assert statement["Condition"]["ArnEquals"]["ecs:cluster"].endswith(
        f":cluster/{dev.config.prefix}-pipeline"
    )
    pass_role = [s for s in statements if "iam:PassRole" in as_list(s["Action"])]
    passed = [str(resource) for s in pass_role for resource in as_list(s["Resource"])]
    # Exactly the run task role and its execution role.
    assert len(passed) == 2
    assert all("DagsterRunTask" in resource for resource in passed)


def test_webserver_is_behind_an_internal_load_balancer_only(dev: Synthesized) -> None:
    template = dev.template(dev.deployment.pipeline)
    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer", {"Scheme": "internal"}
    )
    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::TargetGroup",
        {"Port": WEBSERVER_PORT, "HealthCheckPath": "/server_info"},
    )
    groups = properties_of(template, "AWS::EC2::SecurityGroup")
    ingress = [rule for group in groups for rule in group.get("SecurityGroupIngress", [])]
    assert ingress, "the internal ALB admits the VPC"
    assert {rule["CidrIp"] for rule in ingress} == {dev.config.network.cidr}
    template.has_resource_properties(
        "AWS::ECS::Service", {"EnableExecuteCommand": True, "LoadBalancers": Match.any_value()}
    )


def test_database_admits_the_three_dagster_services(dev: Synthesized) -> None:
    template = dev.template(dev.deployment.pipeline)
    rules = [
        rule
        for rule in properties_of(template, "AWS::EC2::SecurityGroupIngress")
        if rule["FromPort"] == 5432
    ]
    assert len(rules) == 3
    assert all(rule["ToPort"] == 5432 and rule["IpProtocol"] == "tcp" for rule in rules)


def test_runs_write_processed_and_index_and_only_read_source(dev: Synthesized) -> None:
    statements = policy_statements(dev.template(dev.deployment.pipeline))
    names = dev.config.names

    def actions_on(bucket: str) -> set[str]:
        return {
            action
            for statement in statements
            for action in as_list(statement["Action"])
            if any(bucket in str(resource) for resource in as_list(statement["Resource"]))
        }

    assert "s3:PutObject" not in actions_on(names.source_bucket)
    assert "s3:PutObject" in actions_on(names.processed_bucket)
    assert "s3:PutObject" in actions_on(names.index_bucket)
    consume = [s for s in statements if "sqs:ReceiveMessage" in as_list(s["Action"])]
    assert len(consume) == 1
    assert consume[0]["Resource"].endswith(f":{names.events_queue}")
    bedrock = [s for s in statements if "bedrock:InvokeModel" in as_list(s["Action"])]
    assert bedrock
    for statement in bedrock:
        assert statement["Resource"].endswith(
            f"foundation-model/{dev.config.pipeline.bedrock_embedding_model_id}"
        )


def test_prod_runs_tasks_in_private_subnets_without_public_addresses(prod: Synthesized) -> None:
    template = prod.template(prod.deployment.pipeline)
    for service in properties_of(template, "AWS::ECS::Service"):
        network = service["NetworkConfiguration"]["AwsvpcConfiguration"]
        assert network["AssignPublicIp"] == "DISABLED"
    template.has_resource_properties(
        "AWS::ECS::Cluster",
        {"ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}]},
    )
