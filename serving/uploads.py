"""Direct client uploads into the source bucket with presigned POST policies.

The policy S3 enforces pins the exact key (under the caller's collection), the content type and
the size range, so a leaked form can only ever write that one document.
"""

import posixpath
import re
import unicodedata
from typing import Any

from lorechat_pipeline.core.storage import s3_client
from serving.models import UploadRequest, UploadResponse
from serving.settings import ServingSettings


class UploadRefused(ValueError):
    pass


def upload_client(settings: ServingSettings) -> Any:
    """The S3 client that signs upload forms: the pipeline's (retries, timeouts, SigV4)."""
    return s3_client(endpoint_url=settings.s3_endpoint_url, region=settings.aws_region)


def safe_filename(name: str) -> str:
    base = posixpath.basename(name.replace("\\", "/"))
    base = "".join(
        ch for ch in unicodedata.normalize("NFC", base) if unicodedata.category(ch)[0] != "C"
    )
    base = re.sub(r"\s+", " ", base).strip().lstrip(".")
    if not base or base in {".", ".."}:
        raise UploadRefused(f"unusable file name {name!r}")
    return base


def presigned_upload(
    s3_client: Any, settings: ServingSettings, request: UploadRequest
) -> UploadResponse:
    if not settings.upload_bucket:
        raise UploadRefused("uploads are not configured (LORECHAT_UPLOAD_BUCKET)")
    if request.content_type not in settings.upload_content_types:
        raise UploadRefused(
            f"content type {request.content_type!r} is not accepted; allowed: "
            + ", ".join(settings.upload_content_types)
        )
    if request.size > settings.upload_max_bytes:
        raise UploadRefused(
            f"{request.size} bytes is over the {settings.upload_max_bytes}-byte upload limit"
        )
    prefix = settings.upload_prefix.strip("/")
    key = "/".join(
        part for part in (prefix, request.collection, safe_filename(request.filename)) if part
    )
    post = s3_client.generate_presigned_post(
        Bucket=settings.upload_bucket,
        Key=key,
        Fields={"Content-Type": request.content_type},
        Conditions=[
            {"Content-Type": request.content_type},
            ["content-length-range", 1, request.size],
        ],
        ExpiresIn=settings.upload_expiry_seconds,
    )
    return UploadResponse(
        url=post["url"],
        fields={name: str(value) for name, value in post["fields"].items()},
        key=key,
        expires_in=settings.upload_expiry_seconds,
        max_bytes=request.size,
    )
