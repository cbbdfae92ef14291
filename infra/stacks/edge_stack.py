from aws_cdk import Stack
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_route53 as route53
from constructs import Construct

from infra.building_blocks.edge import EdgeFirewall
from infra.config import EnvironmentConfig


class EdgeStack(Stack):
    """What CloudFront requires in us-east-1 whatever the app's region: the CLOUDFRONT-scoped
    WAF web ACL and, with a domain, the viewer certificate. The serving stack reads both
    through cross-region references."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: EnvironmentConfig, **kwargs: object
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        self.firewall = EdgeFirewall(
            self,
            "Firewall",
            name=f"{config.prefix}-edge",
            rate_limit_per_5_minutes=config.serving.waf_rate_limit_per_5_minutes,
            log_retention=config.log_retention,
        )
        self.certificate: acm.ICertificate | None = None
        if config.domain is not None:
            zone = route53.HostedZone.from_hosted_zone_attributes(
                self,
                "Zone",
                hosted_zone_id=config.domain.hosted_zone_id,
                zone_name=config.domain.zone_name,
            )
            self.certificate = acm.Certificate(
                self,
                "ViewerCertificate",
                domain_name=config.domain.site_domain,
                validation=acm.CertificateValidation.from_dns(zone),
            )
