"""The edge: a WAF web ACL for CloudFront, and the CloudFront distribution in front of the ALB."""

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from infra.building_blocks.nag import acknowledge
from infra.building_blocks.serving import ORIGIN_VERIFY_HEADER

STATIC_PATH = "/static/*"
API_PATH = "/v1/*"


class EdgeFirewall(Construct):
    """A CLOUDFRONT-scoped web ACL: a per-IP rate limit, then AWS' common and known-bad-inputs
    rule sets. Such a web ACL can only be created in us-east-1 (the stack's region).

    Requests are logged to CloudWatch Logs with the API key headers redacted.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        rate_limit_per_5_minutes: int,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)

        def visibility(metric: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
            return wafv2.CfnWebACL.VisibilityConfigProperty(
                cloud_watch_metrics_enabled=True, metric_name=metric, sampled_requests_enabled=True
            )

        def managed(name: str, priority: int, **extra: object) -> wafv2.CfnWebACL.RuleProperty:
            return wafv2.CfnWebACL.RuleProperty(
                name=name,
                priority=priority,
                override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                        vendor_name="AWS",
                        name=name,
                        **extra,  # type: ignore[arg-type]
                    )
                ),
                visibility_config=visibility(name),
            )

        self.web_acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            name=name,
            scope="CLOUDFRONT",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=visibility(name),
            rules=[
                wafv2.CfnWebACL.RuleProperty(
                    name="RateLimitPerIp",
                    priority=0,
                    action=wafv2.CfnWebACL.RuleActionProperty(block={}),
                    statement=wafv2.CfnWebACL.StatementProperty(
                        rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                            limit=rate_limit_per_5_minutes,
                            aggregate_key_type="IP",
                            evaluation_window_sec=300,
                        )
                    ),
                    visibility_config=visibility("RateLimitPerIp"),
                ),
                managed(
                    "AWSManagedRulesCommonRuleSet",
                    1,
                    # Chat and search bodies may exceed the rule's 8 KB body limit; the app
                    # enforces its own request size limit (LORECHAT_MAX_REQUEST_BYTES).
                    rule_action_overrides=[
                        wafv2.CfnWebACL.RuleActionOverrideProperty(
                            name="SizeRestrictions_BODY",
                            action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={}),
                        )
                    ],
                ),
                managed("AWSManagedRulesKnownBadInputsRuleSet", 2),
            ],
        )
        self.web_acl_arn = self.web_acl.attr_arn

        # WAF delivers only to log groups whose name starts with aws-waf-logs-.
        log_group_name = f"aws-waf-logs-{name.lower()}"
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=log_group_name,
            retention=log_retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        logging = wafv2.CfnLoggingConfiguration(
            self,
            "Logging",
            resource_arn=self.web_acl.attr_arn,
            # The log group's ARN without the trailing ":*" CloudFormation reports.
            log_destination_configs=[
                Stack.of(self).format_arn(
                    service="logs",
                    resource="log-group",
                    resource_name=log_group_name,
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                )
            ],
            redacted_fields=[
                wafv2.CfnLoggingConfiguration.FieldToMatchProperty(single_header={"Name": header})
                for header in ("authorization", "x-api-key")
            ],
        )
        logging.node.add_dependency(self.log_group)


class ServingDistribution(Construct):
    """CloudFront in front of the serving ALB.

    - `/static/*`: cached (1 day default), compressed with Brotli and gzip;
    - `/v1/*` and everything else (the chat page, health): never cached, all viewer headers,
      cookies and query strings forwarded (Authorization included);
    - the origin gets a secret header the ALB requires; HTTPS to the origin when a domain is
      configured (the ALB then has a certificate), HTTP otherwise;
    - standard logs into the access-log bucket.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        load_balancer: elbv2.IApplicationLoadBalancer,
        origin_secret: str,
        web_acl_arn: str,
        log_bucket: s3.IBucket,
        log_prefix: str,
        origin_domain: str | None = None,
        site_domain: str | None = None,
        certificate: acm.ICertificate | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        headers = {ORIGIN_VERIFY_HEADER: origin_secret}
        origin: cloudfront.IOrigin
        if origin_domain:
            origin = origins.HttpOrigin(
                origin_domain,
                protocol_policy=cloudfront.OriginProtocolPolicy.HTTPS_ONLY,
                origin_ssl_protocols=[cloudfront.OriginSslPolicy.TLS_V1_2],
                custom_headers=headers,
                read_timeout=Duration.seconds(60),
            )
        else:
            origin = origins.LoadBalancerV2Origin(
                load_balancer,
                protocol_policy=cloudfront.OriginProtocolPolicy.HTTP_ONLY,
                custom_headers=headers,
                read_timeout=Duration.seconds(60),
            )
        self.static_cache_policy = cloudfront.CachePolicy(
            self,
            "StaticAssets",
            comment="LoreChat static assets: long-lived, compressed",
            default_ttl=Duration.days(1),
            min_ttl=Duration.seconds(0),
            max_ttl=Duration.days(365),
            enable_accept_encoding_brotli=True,
            enable_accept_encoding_gzip=True,
            query_string_behavior=cloudfront.CacheQueryStringBehavior.none(),
            header_behavior=cloudfront.CacheHeaderBehavior.none(),
            cookie_behavior=cloudfront.CacheCookieBehavior.none(),
        )
        api = cloudfront.BehaviorOptions(
            origin=origin,
            viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
            allowed_methods=cloudfront.AllowedMethods.ALLOW_ALL,
            cache_policy=cloudfront.CachePolicy.CACHING_DISABLED,
            origin_request_policy=cloudfront.OriginRequestPolicy.ALL_VIEWER_EXCEPT_HOST_HEADER,
            response_headers_policy=cloudfront.ResponseHeadersPolicy.SECURITY_HEADERS,
            compress=True,
        )
        static = cloudfront.BehaviorOptions(
            origin=origin,
            viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
            allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD_OPTIONS,
            cached_methods=cloudfront.CachedMethods.CACHE_GET_HEAD_OPTIONS,
            cache_policy=self.static_cache_policy,
            response_headers_policy=cloudfront.ResponseHeadersPolicy.SECURITY_HEADERS,
            compress=True,
        )
        self.distribution = cloudfront.Distribution(
            self,
            "Distribution",
            comment=f"LoreChat serving ({log_prefix.strip('/')})",
            default_behavior=api,
            additional_behaviors={API_PATH: api, STATIC_PATH: static},
            web_acl_id=web_acl_arn,
            domain_names=[site_domain] if site_domain else None,
            certificate=certificate,
            # Effective only with a custom certificate (the default one is fixed at TLSv1).
            minimum_protocol_version=(
                cloudfront.SecurityPolicyProtocol.TLS_V1_2_2021 if certificate else None
            ),
            http_version=cloudfront.HttpVersion.HTTP2_AND_3,
            price_class=cloudfront.PriceClass.PRICE_CLASS_100,
            enable_ipv6=True,
            enable_logging=True,
            log_bucket=log_bucket,
            log_file_prefix=log_prefix,
        )
        acknowledge(
            self.distribution,
            "AwsSolutions-CFR1",
            "The chat API serves a worldwide audience; abuse is handled by the WAF rate limit "
            "and API keys, not by country.",
        )
        if certificate is None:
            acknowledge(
                self.distribution,
                "AwsSolutions-CFR4",
                "No domain is configured for this environment, so the distribution uses the "
                "*.cloudfront.net certificate, whose TLS policy cannot be changed. Configuring "
                "EnvironmentConfig.domain switches to an ACM certificate with TLSv1.2_2021.",
            )
        if not origin_domain:
            acknowledge(
                self.distribution,
                "AwsSolutions-CFR5",
                "Without a domain the ALB has no certificate, so CloudFront reaches it over HTTP "
                "(the ALB admits only CloudFront's prefix list and a secret header). With "
                "EnvironmentConfig.domain the origin is HTTPS-only with TLSv1.2.",
            )
