"""Synthesize each environment once per session; every infra test reads these assemblies.

No AWS account is involved: accounts are the configured placeholders, availability zones come
from cdk.json's context, and nothing is looked up.
"""

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "1")

from aws_cdk import App, Stack
from aws_cdk.assertions import Template

from infra.app import Deployment, build
from infra.config import DEV, PROD, DomainConfig, EnvironmentConfig

INFRA = Path(__file__).resolve().parents[2] / "infra"
CDK_CONTEXT: dict[str, object] = json.loads((INFRA / "cdk.json").read_text())["context"]

# prod moved to eu-west-1 with a domain: the edge stack stays in us-east-1 and the serving stack
# reads its web ACL and certificate across regions; certificates and DNS records appear.
ABROAD = replace(
    PROD,
    name="abroad",
    region="eu-west-1",
    network=replace(PROD.network, availability_zones=("eu-west-1a", "eu-west-1b")),
    serving=replace(PROD.serving, cloudfront_prefix_list_id="pl-4fa04526"),
    domain=DomainConfig(zone_name="example.com", hosted_zone_id="Z0123456789EXAMPLE"),
)
ABROAD_CONTEXT = {
    f"availability-zones:account={PROD.account}:region=eu-west-1": [
        "eu-west-1a",
        "eu-west-1b",
        "eu-west-1c",
    ]
}


@dataclass
class Synthesized:
    config: EnvironmentConfig
    deployment: Deployment
    outdir: Path
    _templates: dict[str, Template] = field(default_factory=dict)

    def template(self, stack: Stack) -> Template:
        if stack.stack_name not in self._templates:
            self._templates[stack.stack_name] = Template.from_stack(stack)
        return self._templates[stack.stack_name]

    def templates(self) -> dict[str, Template]:
        return {stack.stack_name: self.template(stack) for stack in self.deployment.stacks}

    def validation_report(self) -> dict:
        return json.loads((self.outdir / "validation-report.json").read_text())


def synthesize(
    config: EnvironmentConfig, outdir: Path, extra_context: dict | None = None
) -> Synthesized:
    app = App(context={**CDK_CONTEXT, **(extra_context or {})}, outdir=str(outdir))
    deployment = build(app, config)
    try:
        app.synth()
    except Exception as error:  # a cdk-nag finding fails synthesis: show which
        report = outdir / "validation-report.json"
        details = report.read_text() if report.exists() else ""
        raise AssertionError(f"synthesis of {config.name} failed: {error}\n{details}") from error
    return Synthesized(config=config, deployment=deployment, outdir=outdir)


@pytest.fixture(scope="session")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize(DEV, tmp_path_factory.mktemp("cdk-dev"))


@pytest.fixture(scope="session")
def prod(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize(PROD, tmp_path_factory.mktemp("cdk-prod"))


@pytest.fixture(scope="session")
def abroad(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize(ABROAD, tmp_path_factory.mktemp("cdk-abroad"), ABROAD_CONTEXT)


@pytest.fixture(scope="session", params=["dev", "prod", "abroad"])
def every_environment(request: pytest.FixtureRequest) -> Synthesized:
    synthesized: Synthesized = request.getfixturevalue(request.param)
    return synthesized
