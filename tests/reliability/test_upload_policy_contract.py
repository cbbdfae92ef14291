"""Presigned uploads cannot escape their key, content type or size: a contract test.

moto's S3 stores a browser-based POST without checking its policy, so the policy is checked here
by the rules S3 documents for it ("Creating a POST policy" and "Calculating a signature" in the
Amazon S3 API reference): the signature covers the base64 policy, which must not have expired;
every condition must hold; and every form field but the signature, the file, the policy and
`x-ignore-*` ones must be named by a condition. The forms come from `presigned_upload` as the
API hands them out; the honest form is also really POSTed to moto's server.
"""

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
from typing import Any

import httpx
import pytest

from serving.models import UploadRequest
from serving.settings import ServingSettings
from serving.uploads import presigned_upload, upload_client

BUCKET = "upload-contract"
EXEMPT = {"x-amz-signature", "file", "policy"}


class Refused(Exception):
    pass


def signing_key(secret: str, credential: str) -> bytes:
    _, date, region, service, terminal = credential.split("/")
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, terminal):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def s3_accepts(fields: dict[str, str], bucket: str, size: int, secret: str, now: dt.datetime):
    """Raises Refused with S3's reason when S3 would refuse this POST of a `size`-byte file."""
    expected = hmac.new(
        signing_key(secret, fields["x-amz-credential"]),
        fields["policy"].encode(),
        hashlib.sha256,
    ).hexdigest()
    if not hmac.compare_digest(expected, fields.get("x-amz-signature", "")):
        raise Refused("SignatureDoesNotMatch")
    policy = json.loads(base64.b64decode(fields["policy"]))
    if now >= dt.datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00")):
        raise Refused("AccessDenied: policy expired")
    submitted = {name.lower(): value for name, value in fields.items()} | {"bucket": bucket}
    named: set[str] = set()
    for condition in policy["conditions"]:
        if isinstance(condition, dict):
            ((name, value),) = condition.items()
            named.add(name.lower())
            if submitted.get(name.lower()) != value:
                raise Refused(f"AccessDenied: {name} must be {value!r}")
        elif condition[0] == "content-length-range":
            if not condition[1] <= size <= condition[2]:
                raise Refused("EntityTooLarge" if size > condition[2] else "EntityTooSmall")
        else:
            operator, field, value = condition
            name = field.lstrip("$").lower()
            named.add(name)
            actual = submitted.get(name, "")
            if operator == "eq" and actual != value:
                raise Refused(f"AccessDenied: {name} must be {value!r}")
            if operator == "starts-with" and not actual.startswith(value):
                raise Refused(f"AccessDenied: {name} must start with {value!r}")
    for name in submitted:
        if name not in named and name not in EXEMPT and not name.startswith("x-ignore-"):
            raise Refused(f"AccessDenied: extra field {name!r} is not in the policy")


@pytest.fixture
def form(s3_client: Any, moto_endpoint: str) -> dict[str, Any]:
    s3_client.create_bucket(Bucket=BUCKET)
    settings = ServingSettings(
        upload_bucket=BUCKET, upload_prefix="docs", s3_endpoint_url=moto_endpoint
    )
    assert settings.aws_region == "us-east-1"  # where botocore would sign with version 2
    request = UploadRequest(
        filename="../energy/Leave policy.md", content_type="text/markdown", collection="hr", size=64
    )
    granted = presigned_upload(upload_client(settings), settings, request)
    return {"url": granted.url, "fields": granted.fields, "key": granted.key}


def secret() -> str:
    return os.environ["AWS_SECRET_ACCESS_KEY"]


# Any moment before the forms expire (they are made during the tests, after this).
NOW = dt.datetime.now(dt.UTC)


def test_the_honest_form_is_accepted_and_lands_on_its_key(
    form: dict[str, Any], s3_client: Any
) -> None:
    assert form["key"] == "docs/hr/Leave policy.md"  # the path parts of the name are dropped
    s3_accepts(form["fields"], BUCKET, 64, secret(), NOW)
    s3_accepts(form["fields"], BUCKET, 1, secret(), NOW)
    content = b"# Leave\n\nAsk two weeks ahead."
    response = httpx.post(
        form["url"], data=form["fields"], files={"file": ("a.md", content, "text/markdown")}
    )
    assert response.status_code in (200, 204), response.text
    assert s3_client.get_object(Bucket=BUCKET, Key=form["key"])["Body"].read() == content


ESCAPES = {
    "another collection's prefix": ({"key": "docs/energy/Leave policy.md"}, 64, "key must be"),
    "a parent directory": ({"key": "docs/hr/../energy/x.md"}, 64, "key must be"),
    "the bucket root": ({"key": "x.md"}, 64, "key must be"),
    "another content type": ({"Content-Type": "text/html"}, 64, "Content-Type must be"),
    "an executable type": (
        {"Content-Type": "application/x-msdownload"},
        64,
        "Content-Type must be",
    ),
    "more bytes than declared": ({}, 65, "EntityTooLarge"),
    "an empty file": ({}, 0, "EntityTooSmall"),
    "a public ACL": ({"acl": "public-read"}, 64, "extra field"),
    "a redirect": ({"success_action_redirect": "https://evil.example"}, 64, "extra field"),
}


@pytest.mark.parametrize("attempt", ESCAPES, ids=list(ESCAPES))
def test_escapes_are_refused(form: dict[str, Any], attempt: str) -> None:
    changes, size, reason = ESCAPES[attempt]
    with pytest.raises(Refused, match=reason):
        s3_accepts({**form["fields"], **changes}, BUCKET, size, secret(), NOW)


def test_a_widened_policy_breaks_the_signature(form: dict[str, Any]) -> None:
    policy = json.loads(base64.b64decode(form["fields"]["policy"]))
    policy["conditions"] = [
        ["starts-with", "$key", "docs/"] if isinstance(c, dict) and "key" in c else c
        for c in policy["conditions"]
    ]
    widened = base64.b64encode(json.dumps(policy).encode()).decode()
    fields = {**form["fields"], "policy": widened, "key": "docs/energy/x.md"}
    with pytest.raises(Refused, match="SignatureDoesNotMatch"):
        s3_accepts(fields, BUCKET, 64, secret(), NOW)


def test_another_bucket_and_a_late_upload_are_refused(form: dict[str, Any]) -> None:
    with pytest.raises(Refused, match="bucket must be"):
        s3_accepts(form["fields"], "someone-elses-bucket", 64, secret(), NOW)
    policy = json.loads(base64.b64decode(form["fields"]["policy"]))
    expires = dt.datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
    now = dt.datetime.now(dt.UTC)
    assert expires - now <= dt.timedelta(seconds=ServingSettings().upload_expiry_seconds)
    s3_accepts(form["fields"], BUCKET, 64, secret(), expires - dt.timedelta(seconds=1))
    with pytest.raises(Refused, match="expired"):
        s3_accepts(form["fields"], BUCKET, 64, secret(), expires)
