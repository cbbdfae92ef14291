"""The LoreChat CDK app: `cdk synth -c env=dev|prod` (dev by default), from `infra/`.

The environment is chosen here, once, by the `env` context value; everything below receives
the typed `EnvironmentConfig`. `-c account=123456789012` replaces the configured account id.

Stacks, in deployment order (cdk deploys them in this order with `--all`):
  Network -> Data -> Edge (us-east-1) -> Pipeline, Serving -> Monitoring
"""

from dataclasses import dataclass, replace

from aws_cdk import App, Aspects, Environment, Stack, Validations
from cdk_nag import AwsSolutionsChecks

from infra.building_blocks.tagging import RequiredTags
from infra.config import PROJECT, EnvironmentConfig, environment_config
from infra.stacks.data_stack import DataStack
from infra.stacks.edge_stack import EdgeStack
from infra.stacks.monitoring_stack import MonitoringStack
from infra.stacks.network_stack import NetworkStack
from infra.stacks.pipeline_stack import PipelineStack
from infra.stacks.serving_stack import ServingStack


@dataclass(frozen=True)
class Deployment:
    network: NetworkStack
    data: DataStack
    edge: EdgeStack
    pipeline: PipelineStack
    serving: ServingStack
    monitoring: MonitoringStack

    @property
    def stacks(self) -> tuple[Stack, ...]:
        return (self.network, self.data, self.edge, self.pipeline, self.serving, self.monitoring)


def build(app: App, config: EnvironmentConfig) -> Deployment:
    """Every stack of one environment, tagged, with cdk-nag's AwsSolutions checks attached."""
    regional = Environment(account=config.account, region=config.region)
    common = {"termination_protection": config.termination_protection}

    def name(unit: str) -> str:
        return f"{config.prefix}-{unit}"

    network = NetworkStack(
        app, name("Network"), config=config, env=regional,
        description="LoreChat: VPC, subnets, flow logs", **common,
    )  # fmt: skip
    data = DataStack(
        app, name("Data"), config=config, network=network.network, env=regional,
        description="LoreChat: buckets, event queue, secrets, Dagster database (stateful)",
        **common,
    )  # fmt: skip
    edge = EdgeStack(
        app, name("Edge"), config=config,
        env=Environment(account=config.account, region=config.cloudfront_region),
        description="LoreChat: CloudFront WAF web ACL and certificate (us-east-1 only)",
        **common,
    )  # fmt: skip
    pipeline = PipelineStack(
        app, name("Pipeline"), config=config, network=network.network, data=data,
        env=regional, description="LoreChat: Dagster on ECS Fargate", **common,
    )  # fmt: skip
    serving = ServingStack(
        app, name("Serving"), config=config, network=network.network, data=data, edge=edge,
        env=regional, cross_region_references=config.region != config.cloudfront_region,
        description="LoreChat: serving API on Fargate Spot behind CloudFront and WAF",
        **common,
    )  # fmt: skip
    monitoring = MonitoringStack(
        app, name("Monitoring"), config=config, data=data, pipeline=pipeline,
        serving=serving, env=regional,
        description="LoreChat: dashboard, alarms, budget", **common,
    )  # fmt: skip
    deployment = Deployment(network, data, edge, pipeline, serving, monitoring)

    functions = {
        network: "network",
        data: "data",
        edge: "edge",
        pipeline: "pipeline",
        serving: "serving",
        monitoring: "monitoring",
    }
    for stack, function in functions.items():
        Aspects.of(stack).add(
            RequiredTags(
                environment=config.name,
                project=PROJECT,
                function=function,
                owner=config.owner,
                extra=config.tags,
            )
        )
    attach_compliance_checks(app)
    return deployment


def attach_compliance_checks(app: App) -> None:
    """cdk-nag's AwsSolutions pack on every stack: an unacknowledged finding fails synthesis.

    Acknowledgements (with their reasons) are also written into each resource's template
    Metadata, so the audit trail travels with the templates.
    """
    Validations.of(app).add_plugins(
        AwsSolutionsChecks(app, verbose=True, write_suppressions_to_cloud_formation=True)
    )


def main() -> None:
    app = App()
    config = environment_config(str(app.node.try_get_context("env") or "dev"))
    account = app.node.try_get_context("account")
    if account:
        config = replace(config, account=str(account))
    build(app, config)
    app.synth()


if __name__ == "__main__":
    main()
