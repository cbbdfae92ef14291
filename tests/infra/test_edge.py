"""The us-east-1 edge stack, and the cross-region, custom-domain variant."""

import json

from aws_cdk.assertions import Match

from tests.infra.conftest import Synthesized
from tests.infra.helpers import only, properties_of


def test_web_acl_is_cloudfront_scoped_in_us_east_1(every_environment: Synthesized) -> None:
    edge = every_environment.deployment.edge
    assert edge.region == "us-east-1"
    acl = only(properties_of(every_environment.template(edge), "AWS::WAFv2::WebACL"))
    assert acl["Scope"] == "CLOUDFRONT"
    assert acl["DefaultAction"] == {"Allow": {}}
    rules = {rule["Name"]: rule for rule in acl["Rules"]}
    rate = rules["RateLimitPerIp"]["Statement"]["RateBasedStatement"]
    assert rate["AggregateKeyType"] == "IP"
    assert rate["Limit"] == every_environment.config.serving.waf_rate_limit_per_5_minutes
    assert rules["RateLimitPerIp"]["Action"] == {"Block": {}}
    common = rules["AWSManagedRulesCommonRuleSet"]["Statement"]["ManagedRuleGroupStatement"]
    assert common["VendorName"] == "AWS"
    assert "AWSManagedRulesKnownBadInputsRuleSet" in rules


def test_requests_are_logged_without_api_keys(dev: Synthesized) -> None:
    template = dev.template(dev.deployment.edge)
    logging = only(properties_of(template, "AWS::WAFv2::LoggingConfiguration"))
    (destination,) = logging["LogDestinationConfigs"]
    assert ":log-group:aws-waf-logs-" in json.dumps(destination)
    assert not json.dumps(destination).endswith(':*"')
    assert logging["RedactedFields"] == [
        {"SingleHeader": {"Name": "authorization"}},
        {"SingleHeader": {"Name": "x-api-key"}},
    ]
    template.has_resource_properties(
        "AWS::Logs::LogGroup",
        {"LogGroupName": Match.string_like_regexp("^aws-waf-logs-"), "RetentionInDays": 7},
    )


def test_distribution_uses_the_edge_web_acl(dev: Synthesized) -> None:
    config = only(
        properties_of(dev.template(dev.deployment.serving), "AWS::CloudFront::Distribution")
    )["DistributionConfig"]
    assert "LoreChat-dev-Edge" in json.dumps(config["WebACLId"])


def test_without_a_domain_there_is_no_certificate_or_record(dev: Synthesized) -> None:
    for stack in (dev.deployment.edge, dev.deployment.serving):
        template = dev.template(stack)
        template.resource_count_is("AWS::CertificateManager::Certificate", 0)
        template.resource_count_is("AWS::Route53::RecordSet", 0)


def test_abroad_keeps_the_edge_in_us_east_1_and_serving_in_its_region(
    abroad: Synthesized,
) -> None:
    deployment = abroad.deployment
    assert deployment.serving.region == "eu-west-1"
    assert deployment.edge.region == "us-east-1"
    config = only(
        properties_of(abroad.template(deployment.serving), "AWS::CloudFront::Distribution")
    )["DistributionConfig"]
    # The web ACL and certificate ARNs are read from the us-east-1 stack's outputs.
    assert '"Region": "us-east-1"' in json.dumps(config["WebACLId"])
    assert '"Region": "us-east-1"' in json.dumps(config["ViewerCertificate"])


def test_a_domain_brings_certificates_records_and_https_to_the_origin(
    abroad: Synthesized,
) -> None:
    domain = abroad.config.domain
    assert domain is not None
    deployment = abroad.deployment
    abroad.template(deployment.edge).has_resource_properties(
        "AWS::CertificateManager::Certificate",
        {"DomainName": domain.site_domain, "ValidationMethod": "DNS"},
    )
    serving = abroad.template(deployment.serving)
    serving.has_resource_properties(
        "AWS::CertificateManager::Certificate",
        {"DomainName": domain.origin_domain, "ValidationMethod": "DNS"},
    )
    records = properties_of(serving, "AWS::Route53::RecordSet")
    assert {(record["Name"], record["Type"]) for record in records} == {
        (f"{domain.site_domain}.", "A"),
        (f"{domain.site_domain}.", "AAAA"),
        (f"{domain.origin_domain}.", "A"),
    }
    serving.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener",
        {"Port": 443, "Protocol": "HTTPS", "Certificates": Match.any_value()},
    )
    config = only(properties_of(serving, "AWS::CloudFront::Distribution"))["DistributionConfig"]
    assert config["Aliases"] == [domain.site_domain]
    assert config["ViewerCertificate"]["MinimumProtocolVersion"] == "TLSv1.2_2021"
    origin = only(config["Origins"])
    assert origin["DomainName"] == domain.origin_domain
    assert origin["CustomOriginConfig"]["OriginProtocolPolicy"] == "https-only"
    assert origin["CustomOriginConfig"]["OriginSSLProtocols"] == ["TLSv1.2"]
