from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.building_blocks.dagster import COMPUTE_LOG_PREFIX, DagsterDeployment
from infra.building_blocks.data_access import DataAccess
from infra.building_blocks.images import pipeline_image
from infra.building_blocks.nag import S3_READ_ACTIONS, S3_WRITE_ACTIONS, acknowledge_wildcards
from infra.building_blocks.network import Network
from infra.building_blocks.secrets import UPSTASH_TOKEN_KEY, UPSTASH_URL_KEY
from infra.config import EnvironmentConfig
from infra.stacks.data_stack import DataStack


def bedrock_model_arn(stack: Stack, model_id: str) -> str:
    return stack.format_arn(
        service="bedrock", account="", resource="foundation-model", resource_name=model_id
    )


class PipelineStack(Stack):
    """Dagster on ECS Fargate, and what its code may touch: read the source bucket and its event
    queue, write the processed and index buckets, call the Bedrock embedding model."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        network: Network,
        data: DataStack,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        pipeline = config.pipeline
        stored = DataAccess(self, "Data", names=config.names)
        environment = {
            "LORECHAT_ENVIRONMENT": "aws",
            "LORECHAT_HOME": "/tmp/lorechat",
            "LORECHAT_SOURCE": stored.s3_uri(stored.source, config.documents_prefix),
            "LORECHAT_PROCESSED": stored.s3_uri(stored.processed),
            "LORECHAT_INDEX_URI": stored.s3_uri(stored.index, "index"),
            "LORECHAT_AWS_REGION": self.region,
            "LORECHAT_SQS_QUEUE_URL": stored.events_queue.queue_url,
            "LORECHAT_VECTOR_STORE": pipeline.vector_store,
            "LORECHAT_EMBEDDER": pipeline.embedder,
            "LORECHAT_BEDROCK_EMBEDDING_MODEL_ID": pipeline.bedrock_embedding_model_id,
        }
        # Secrets by their full ARNs (ECS resolves JSON keys of full ARNs only).
        upstash = data.secrets.upstash
        secrets = {
            UPSTASH_URL_KEY: ecs.Secret.from_secrets_manager(upstash, UPSTASH_URL_KEY),
            UPSTASH_TOKEN_KEY: ecs.Secret.from_secrets_manager(upstash, UPSTASH_TOKEN_KEY),
        }
        self.dagster = DagsterDeployment(
            self,
            "Dagster",
            name_prefix=config.prefix,
            vpc=network.vpc,
            task_subnets=network.task_subnets,
            assign_public_ip=network.tasks_need_public_ip,
            load_balancer_subnets=network.internal_subnets,
            webserver_client_cidrs=[config.network.cidr, *pipeline.webserver_client_cidrs],
            image=pipeline_image(),
            database=data.database,
            database_secret=data.database.secret,
            compute_log_bucket=stored.processed,
            config=pipeline,
            app_environment=environment,
            app_secrets=secrets,
            log_retention=config.log_retention,
            container_insights=config.container_insights,
            access_logs=data.access_logs,
        )

        # Runs parse, chunk, embed and write; the code server evaluates sensors (the SQS event
        # sensor, S3 listings) and reads what it reports on.
        runs = self.dagster.run_role
        code = self.dagster.code_server_role
        stored.source.grant_read(runs)
        stored.processed.grant_read_write(runs)
        stored.index.grant_read_write(runs)
        stored.index.grant_delete(runs)  # retention of old index versions
        for bucket in (stored.source, stored.processed, stored.index):
            bucket.grant_read(code)
        stored.events_queue.grant_consume_messages(code)
        # Step logs (dagster.yaml compute_logs): runs write them, the webserver shows them.
        stored.processed.grant_read(self.dagster.webserver_role, f"{COMPUTE_LOG_PREFIX}*")
        embed = iam.PolicyStatement(
            actions=["bedrock:InvokeModel"],
            resources=[bedrock_model_arn(self, pipeline.bedrock_embedding_model_id)],
        )
        runs.add_to_principal_policy(embed)
        code.add_to_principal_policy(embed)

        # What an operator needs to reach the UI (README: "Reaching the Dagster UI").
        CfnOutput(self, "ClusterName", value=self.dagster.cluster_name)
        CfnOutput(self, "WebserverServiceName", value=self.dagster.webserver_service.service_name)
        CfnOutput(
            self,
            "WebserverInternalUrl",
            value=f"http://{self.dagster.load_balancer.load_balancer_dns_name}",
        )

        objects = [
            stored.source.arn_for_objects("*"),
            stored.processed.arn_for_objects("*"),
            stored.index.arn_for_objects("*"),
        ]
        acknowledge_wildcards(
            runs,
            actions=(*S3_READ_ACTIONS, *S3_WRITE_ACTIONS),
            resources=objects,
            reason="A run reads any source document and rewrites any object of the processed "
            "and index buckets (LanceDB fragments, manifests, old versions): object keys are "
            "data, so the grant is every object of exactly these three buckets.",
        )
        acknowledge_wildcards(
            self.dagster.webserver_role,
            actions=S3_READ_ACTIONS,
            resources=[stored.processed.arn_for_objects(f"{COMPUTE_LOG_PREFIX}*")],
            reason="The webserver shows step logs: it reads objects under the compute-log prefix "
            "of the processed bucket only, whose keys are run and step ids.",
        )
        acknowledge_wildcards(
            code,
            actions=S3_READ_ACTIONS,
            resources=objects,
            reason="Sensors list and read any object of the three pipeline buckets (new uploads, "
            "processed state, index manifests); read-only, and no other bucket.",
        )
