"""Secrets that people put in after the first deploy; templates only ever hold placeholders."""

import json

from aws_cdk import RemovalPolicy, SecretValue
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.building_blocks.nag import acknowledge

UPSTASH_URL_KEY = "UPSTASH_VECTOR_REST_URL"
UPSTASH_TOKEN_KEY = "UPSTASH_VECTOR_REST_TOKEN"
PLACEHOLDER_API_KEYS = [{"name": "placeholder", "sha256": "0" * 64, "collections": []}]


class ApplicationSecrets(Construct):
    """The Upstash Vector credentials (pipeline and serving) and the serving API keys.

    Values are set out of band (`aws secretsmanager put-secret-value`, see the README), so no
    credential is ever in a template or in git. The Upstash secret starts with a random token
    and an empty URL; the API keys secret starts with a hash no key matches, so a forgotten step
    fails closed (every request is refused) rather than open.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        upstash_secret_name: str,
        api_keys_secret_name: str,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.upstash = secretsmanager.Secret(
            self,
            "Upstash",
            secret_name=upstash_secret_name,
            description="Upstash Vector REST URL and token (JSON keys "
            f"{UPSTASH_URL_KEY}, {UPSTASH_TOKEN_KEY}); set with put-secret-value.",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=json.dumps({UPSTASH_URL_KEY: ""}),
                generate_string_key=UPSTASH_TOKEN_KEY,
                exclude_punctuation=True,
            ),
            removal_policy=removal_policy,
        )
        self.api_keys = secretsmanager.Secret(
            self,
            "ApiKeys",
            secret_name=api_keys_secret_name,
            description="LORECHAT_API_KEYS: JSON list of {name, sha256, collections} "
            "(SHA-256 hex of each key, never the key; see the README).",
            # Not a credential: an entry whose hash no key has, so the app starts (it refuses
            # to listen publicly without keys) and refuses every request until real hashes
            # are put in.
            secret_string_value=SecretValue.unsafe_plain_text(json.dumps(PLACEHOLDER_API_KEYS)),
            removal_policy=removal_policy,
        )
        acknowledge(
            self.upstash,
            "AwsSolutions-SMG4",
            "Upstash issues and revokes this REST token in its own console; a Secrets Manager "
            "rotation Lambda cannot mint one. Rotate in Upstash, then put-secret-value.",
        )
        acknowledge(
            self.api_keys,
            "AwsSolutions-SMG4",
            "Holds SHA-256 hashes of client API keys, not a credential AWS can rotate; keys are "
            "rotated by issuing new ones and replacing the list of hashes.",
        )
