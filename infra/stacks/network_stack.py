from aws_cdk import Stack
from constructs import Construct

from infra.building_blocks.network import Network
from infra.config import EnvironmentConfig


class NetworkStack(Stack):
    """The VPC every other regional stack lives in."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: EnvironmentConfig, **kwargs: object
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        self.network = Network(
            self, "Network", config=config.network, flow_log_retention=config.log_retention
        )
