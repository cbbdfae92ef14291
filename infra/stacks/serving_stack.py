import json

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_route53_targets as targets
from constructs import Construct

from infra.building_blocks.data_access import DataAccess
from infra.building_blocks.edge import ServingDistribution
from infra.building_blocks.images import serving_image
from infra.building_blocks.nag import S3_READ_ACTIONS, acknowledge_wildcards
from infra.building_blocks.network import Network
from infra.building_blocks.secrets import UPSTASH_TOKEN_KEY, UPSTASH_URL_KEY
from infra.building_blocks.serving import ServingService
from infra.config import EnvironmentConfig
from infra.stacks.data_stack import DataStack
from infra.stacks.edge_stack import EdgeStack
from infra.stacks.pipeline_stack import bedrock_model_arn


class ServingStack(Stack):
    """The serving API: Fargate Spot behind a CloudFront-only ALB, CloudFront with the edge WAF,
    and (with a domain) TLS certificates and DNS records. It reads the index, presigns uploads
    into the source bucket's upload prefix and calls one Bedrock model."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        network: Network,
        data: DataStack,
        edge: EdgeStack,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        serving = config.serving
        domain = config.domain
        stored = DataAccess(self, "Data", names=config.names)
        zone = origin_certificate = None
        if domain is not None:
            zone = route53.HostedZone.from_hosted_zone_attributes(
                self, "Zone", hosted_zone_id=domain.hosted_zone_id, zone_name=domain.zone_name
            )
            origin_certificate = acm.Certificate(
                self,
                "OriginCertificate",
                domain_name=domain.origin_domain,
                validation=acm.CertificateValidation.from_dns(zone),
            )

        cors = list(serving.cors_origins)
        if domain is not None:
            cors.append(f"https://{domain.site_domain}")
        environment = {
            "LORECHAT_INDEX_URI": stored.s3_uri(stored.index, "index"),
            "LORECHAT_AWS_REGION": self.region,
            "LORECHAT_SERVE_HOST": "0.0.0.0",
            "LORECHAT_SERVE_PORT": str(serving.container_port),
            "LORECHAT_UPLOAD_BUCKET": stored.source.bucket_name,
            "LORECHAT_UPLOAD_PREFIX": config.documents_prefix,
            "LORECHAT_GENERATOR": "bedrock",
            "LORECHAT_BEDROCK_MODEL_ID": serving.bedrock_model_id,
            "LORECHAT_VECTOR_STORE": config.pipeline.vector_store,
            "LORECHAT_EMBEDDER": config.pipeline.embedder,
            "LORECHAT_BEDROCK_EMBEDDING_MODEL_ID": config.pipeline.bedrock_embedding_model_id,
            "LORECHAT_CORS_ORIGINS": json.dumps(cors),
            # One server process per whole vCPU of the task: one process's Python runs on one
            # core at a time (docs/benchmarks.md, serving).
            "LORECHAT_WORKERS": str(max(1, serving.cpu // 1024)),
        }
        # Secrets by their full ARNs (ECS resolves JSON keys of full ARNs only).
        upstash = data.secrets.upstash
        secrets = {
            "LORECHAT_API_KEYS": ecs.Secret.from_secrets_manager(data.secrets.api_keys),
            UPSTASH_URL_KEY: ecs.Secret.from_secrets_manager(upstash, UPSTASH_URL_KEY),
            UPSTASH_TOKEN_KEY: ecs.Secret.from_secrets_manager(upstash, UPSTASH_TOKEN_KEY),
        }
        self.service = ServingService(
            self,
            "Serving",
            name_prefix=config.prefix,
            vpc=network.vpc,
            task_subnets=network.task_subnets,
            assign_public_ip=network.tasks_need_public_ip,
            image=serving_image(),
            config=serving,
            environment=environment,
            secrets=secrets,
            cloudfront_prefix_list_id=serving.cloudfront_prefix_list_id,
            log_retention=config.log_retention,
            container_insights=config.container_insights,
            access_logs=data.access_logs,
            origin_certificate=origin_certificate,
        )
        self.cdn = ServingDistribution(
            self,
            "Cdn",
            load_balancer=self.service.load_balancer,
            origin_secret=self.service.origin_secret.secret_value.unsafe_unwrap(),
            web_acl_arn=edge.firewall.web_acl_arn,
            log_bucket=data.access_logs,
            log_prefix=f"{config.prefix}/cloudfront/",
            origin_domain=domain.origin_domain if domain else None,
            site_domain=domain.site_domain if domain else None,
            certificate=edge.certificate,
        )
        if domain is not None and zone is not None:
            cdn_target = route53.RecordTarget.from_alias(
                targets.CloudFrontTarget(self.cdn.distribution)
            )
            route53.ARecord(
                self, "SiteA", zone=zone, record_name=domain.record_name, target=cdn_target
            )
            route53.AaaaRecord(
                self, "SiteAaaa", zone=zone, record_name=domain.record_name, target=cdn_target
            )
            route53.ARecord(
                self,
                "OriginA",
                zone=zone,
                record_name=domain.origin_record_name,
                target=route53.RecordTarget.from_alias(
                    targets.LoadBalancerTarget(self.service.load_balancer)
                ),
            )

        CfnOutput(
            self,
            "Url",
            value=f"https://{domain.site_domain if domain else self.cdn.distribution.domain_name}",
        )

        # Least privilege: read the index, presign uploads under the upload prefix only, call
        # the chat model (Converse and ConverseStream) and the query embedding model.
        role = self.service.task_role
        stored.index.grant_read(role)
        uploads = f"{config.documents_prefix}*"
        stored.source.grant_put(role, uploads)
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"],
                resources=[bedrock_model_arn(self, serving.bedrock_model_id)],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["bedrock:InvokeModel"],
                resources=[bedrock_model_arn(self, config.pipeline.bedrock_embedding_model_id)],
            )
        )
        acknowledge_wildcards(
            role,
            actions=(*S3_READ_ACTIONS, "s3:Abort*"),
            resources=[stored.index.arn_for_objects("*"), stored.source.arn_for_objects(uploads)],
            reason="Serving reads any object of the index bucket (LanceDB tables and manifests) "
            "and presigns uploads whose keys are chosen per request, under the upload prefix "
            "of the source bucket only (s3:Abort* lets a client abort its multipart upload).",
        )
