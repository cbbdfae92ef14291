import json

from aws_cdk.assertions import Match

from infra.building_blocks.serving import ORIGIN_VERIFY_HEADER
from tests.infra.conftest import Synthesized
from tests.infra.helpers import (
    as_list,
    container,
    environment,
    only,
    policy_statements,
    properties_of,
    refers_to,
    secrets,
)

CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"  # AWS managed cache policy
ALL_VIEWER_EXCEPT_HOST = "b689b0a8-53d0-40ab-baf2-68738e2966ac"  # managed origin request policy


def test_api_runs_on_fargate_spot_with_half_a_vcpu_and_1_gb(dev: Synthesized) -> None:
    template = dev.template(dev.deployment.serving)
    template.has_resource_properties(
        "AWS::ECS::Service",
        {
            "CapacityProviderStrategy": [{"CapacityProvider": "FARGATE_SPOT", "Weight": 1}],
            "DesiredCount": 1,
        },
    )
    template.has_resource_properties(
        "AWS::ECS::ClusterCapacityProviderAssociations",
        {"CapacityProviders": Match.array_with(["FARGATE_SPOT"])},
    )
    template.has_resource_properties("AWS::ECS::TaskDefinition", {"Cpu": "512", "Memory": "1024"})
    api = container(template, "api")
    assert api["PortMappings"][0]["ContainerPort"] == 8000
    assert api["HealthCheck"]["Interval"] == 60
    assert "/healthz" in api["HealthCheck"]["Command"][-1]


def test_scales_between_one_and_four_tasks_at_70_percent_cpu_and_memory(
    dev: Synthesized,
) -> None:
    template = dev.template(dev.deployment.serving)
    template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget",
        {"MinCapacity": 1, "MaxCapacity": 4, "ScalableDimension": "ecs:service:DesiredCount"},
    )
    policies = properties_of(template, "AWS::ApplicationAutoScaling::ScalingPolicy")
    tracked = {
        policy["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"][
            "PredefinedMetricType"
        ]: policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"]
        for policy in policies
    }
    assert tracked == {
        "ECSServiceAverageCPUUtilization": 70,
        "ECSServiceAverageMemoryUtilization": 70,
    }


def test_target_group_checks_healthz_every_60_seconds(dev: Synthesized) -> None:
    dev.template(dev.deployment.serving).has_resource_properties(
        "AWS::ElasticLoadBalancingV2::TargetGroup",
        {
            "Port": 8000,
            "TargetType": "ip",
            "HealthCheckPath": "/healthz",
            "HealthCheckIntervalSeconds": 60,
        },
    )


def test_load_balancer_admits_only_cloudfronts_prefix_list(every_environment: Synthesized) -> None:
    template = every_environment.template(every_environment.deployment.serving)
    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer", {"Scheme": "internet-facing"}
    )
    ingress = [
        rule
        for group in properties_of(template, "AWS::EC2::SecurityGroup")
        for rule in group.get("SecurityGroupIngress", [])
    ]
    ingress += properties_of(template, "AWS::EC2::SecurityGroupIngress")
    public = [rule for rule in ingress if "CidrIp" in rule or "CidrIpv6" in rule]
    assert public == [], "nothing may be open to an address range"
    from_cloudfront = [rule for rule in ingress if "SourcePrefixListId" in rule]
    assert [rule["SourcePrefixListId"] for rule in from_cloudfront] == [
        every_environment.config.serving.cloudfront_prefix_list_id
    ]


def test_listener_forwards_only_requests_carrying_the_origin_secret(dev: Synthesized) -> None:
    template = dev.template(dev.deployment.serving)
    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener",
        {
            "Port": 80,
            "DefaultActions": [
                {
                    "Type": "fixed-response",
                    "FixedResponseConfig": Match.object_like({"StatusCode": "403"}),
                }
            ],
        },
    )
    rules = properties_of(template, "AWS::ElasticLoadBalancingV2::ListenerRule")
    forward = only([rule for rule in rules if rule["Actions"][0]["Type"] == "forward"])
    condition = only(forward["Conditions"])
    assert condition["Field"] == "http-header"
    assert condition["HttpHeaderConfig"]["HttpHeaderName"] == ORIGIN_VERIFY_HEADER
    assert "resolve:secretsmanager" in json.dumps(condition["HttpHeaderConfig"]["Values"])
    hidden = only([rule for rule in rules if rule["Actions"][0]["Type"] == "fixed-response"])
    assert hidden["Priority"] < forward["Priority"]
    assert "/metrics" in hidden["Conditions"][0]["PathPatternConfig"]["Values"]


def test_cloudfront_caches_static_assets_and_never_the_api(dev: Synthesized) -> None:
    template = dev.template(dev.deployment.serving)
    config = only(properties_of(template, "AWS::CloudFront::Distribution"))["DistributionConfig"]
    assert config["DefaultCacheBehavior"]["CachePolicyId"] == CACHING_DISABLED
    assert config["DefaultCacheBehavior"]["OriginRequestPolicyId"] == ALL_VIEWER_EXCEPT_HOST
    assert config["DefaultCacheBehavior"]["ViewerProtocolPolicy"] == "redirect-to-https"
    behaviors = {behavior["PathPattern"]: behavior for behavior in config["CacheBehaviors"]}
    assert behaviors["/v1/*"]["CachePolicyId"] == CACHING_DISABLED
    assert "POST" in behaviors["/v1/*"]["AllowedMethods"]
    static = behaviors["/static/*"]
    assert static["CachePolicyId"] != CACHING_DISABLED
    assert static["Compress"] is True
    template.has_resource_properties(
        "AWS::CloudFront::CachePolicy",
        {
            "CachePolicyConfig": {
                "DefaultTTL": 86400,
                "ParametersInCacheKeyAndForwardedToOrigin": Match.object_like(
                    {"EnableAcceptEncodingBrotli": True, "EnableAcceptEncodingGzip": True}
                ),
            }
        },
    )
    origin = only(config["Origins"])
    assert origin["OriginCustomHeaders"][0]["HeaderName"] == ORIGIN_VERIFY_HEADER
    assert "WebACLId" in config
    assert config["Logging"]["Prefix"] == f"{dev.config.prefix}/cloudfront/"


def test_serving_environment_and_secrets(dev: Synthesized) -> None:
    api = container(dev.template(dev.deployment.serving), "api")
    values = environment(api)
    names = dev.config.names
    assert values["LORECHAT_INDEX_URI"] == f"s3://{names.index_bucket}/index"
    assert values["LORECHAT_SERVE_HOST"] == "0.0.0.0"
    assert values["LORECHAT_SERVE_PORT"] == "8000"
    assert values["LORECHAT_UPLOAD_BUCKET"] == names.source_bucket
    assert values["LORECHAT_UPLOAD_PREFIX"] == dev.config.documents_prefix
    assert values["LORECHAT_GENERATOR"] == "bedrock"
    assert values["LORECHAT_BEDROCK_MODEL_ID"] == dev.config.serving.bedrock_model_id
    assert json.loads(values["LORECHAT_CORS_ORIGINS"]) == list(dev.config.serving.cors_origins)
    # One server process per whole vCPU: the dev task's half vCPU runs one.
    assert dev.config.serving.cpu < 2048
    assert values["LORECHAT_WORKERS"] == "1"
    assert values["LORECHAT_AWS_REGION"] == "us-east-1"
    hidden = secrets(api)
    assert refers_to(hidden["LORECHAT_API_KEYS"], dev.deployment.data.secrets.api_keys)
    assert {"UPSTASH_VECTOR_REST_URL", "UPSTASH_VECTOR_REST_TOKEN"} <= set(hidden)
    assert "LORECHAT_API_KEYS" not in values


def test_least_privilege_for_the_api(dev: Synthesized) -> None:
    statements = policy_statements(dev.template(dev.deployment.serving))
    names = dev.config.names
    puts = [s for s in statements if "s3:PutObject" in as_list(s["Action"])]
    assert [str(resource) for s in puts for resource in as_list(s["Resource"])] == [
        f"arn:aws:s3:::{names.source_bucket}/{dev.config.documents_prefix}*"
    ]
    index_reads = [
        s
        for s in statements
        if "s3:GetObject*" in as_list(s["Action"])
        and any(names.index_bucket in str(r) for r in as_list(s["Resource"]))
    ]
    assert index_reads
    assert not any(
        names.processed_bucket in str(resource)
        for s in statements
        for resource in as_list(s["Resource"])
    )
    bedrock = [s for s in statements if any(a.startswith("bedrock:") for a in as_list(s["Action"]))]
    resources = {str(resource) for s in bedrock for resource in as_list(s["Resource"])}
    assert resources == {
        f"arn:aws:bedrock:us-east-1::foundation-model/{dev.config.serving.bedrock_model_id}",
        "arn:aws:bedrock:us-east-1::foundation-model/"
        f"{dev.config.pipeline.bedrock_embedding_model_id}",
    }
