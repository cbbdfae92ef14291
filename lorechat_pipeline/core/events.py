"""S3 event notifications, delivered through SQS, turned into source events.

Listing a whole source bucket on every tick does not scale, so the bucket publishes
ObjectCreated/ObjectRemoved notifications to an SQS queue (directly or through SNS) and the
pipeline drains that queue instead. This module is the pure part of that: reading the queue,
understanding the several body shapes S3 and SNS produce, decoding keys and collapsing repeated
events per object. It deliberately knows nothing about Dagster so it can be tested against a real
SQS API and reused by any scheduler.

Deleting messages is a separate step (`delete_messages`) so the caller can acknowledge them only
after the events have been recorded durably; a crash in between means redelivery, not loss.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote_plus

if TYPE_CHECKING:
    # Only a stub package; Any when it is not installed, the real client type when it is.
    from mypy_boto3_sqs.client import SQSClient

logger = logging.getLogger(__name__)

EventKind = Literal["created", "removed"]

SQS_MAX_BATCH = 10  # hard limit of both ReceiveMessage and DeleteMessageBatch
_MALFORMED_BODY_PREVIEW_CHARS = 200


@dataclass(frozen=True)
class SourceEvent:
    bucket: str
    key: str  # decoded: exactly the key to pass back to S3
    kind: str  # an EventKind: "created" or "removed"
    sequencer: str | None  # S3's per-key ordering token (hex); absent from some emulators
    etag: str | None


@dataclass
class DrainedMessages:
    events: list[SourceEvent] = field(default_factory=list)
    # Every message received, usable or not: all of them must be deleted once handled, or test
    # events and malformed bodies would come back forever.
    receipt_handles: list[str] = field(default_factory=list)
    malformed: int = 0


def parse_notification(body: str) -> list[SourceEvent]:
    """The object events in one SQS message body.

    Understands a raw S3 notification (`{"Records": [...]}`), S3's `s3:TestEvent` (sent when the
    notification configuration is saved; yields nothing) and an SNS envelope around either.
    ObjectCreated:*, ObjectRemoved:* and LifecycleExpiration:* records become events; other record
    types are ignored.

    Raises ValueError when the body is not JSON or not one of those shapes, including when any
    record in it is incomplete: a half-understood message is treated as not understood.
    """
    return _parse_payload(_load_json_object(body), allow_sns_envelope=True)


def latest_per_key(events: Iterable[SourceEvent]) -> list[SourceEvent]:
    """One event per (bucket, key): the last one S3 applied to that object.

    SQS does not preserve order, so S3's sequencer decides. Sequencers are hex strings of varying
    length that AWS documents as comparable only after left-padding with zeros to equal length.
    An event without a sequencer cannot be placed in S3's order, so it ranks below any event that
    has one; among equal or missing sequencers the one later in the input wins.
    Keys come out in the order they first appear in the input.
    """
    events = list(events)
    width = max((len(event.sequencer) for event in events if event.sequencer), default=0)

    def rank(position: int) -> tuple[bool, str, int]:
        sequencer = events[position].sequencer
        if not sequencer:
            return (False, "", position)
        return (True, sequencer.upper().rjust(width, "0"), position)

    winner_position: dict[tuple[str, str], int] = {}
    for position, event in enumerate(events):
        object_id = (event.bucket, event.key)
        current = winner_position.get(object_id)
        if current is None or rank(position) > rank(current):
            winner_position[object_id] = position
    return [events[position] for position in winner_position.values()]


def drain_queue(
    sqs_client: SQSClient,
    queue_url: str,
    *,
    max_messages: int = 1000,
    wait_seconds: int = 0,
    visibility_timeout: int = 300,
) -> DrainedMessages:
    """Receive messages until the queue comes back empty or `max_messages` have been received.

    Nothing is deleted: received messages stay hidden for `visibility_timeout` seconds (which is
    also what stops this loop from seeing them again) and reappear unless `delete_messages` is
    called with their receipt handles. With short polling (`wait_seconds=0`) SQS samples only some
    of its servers, so an empty answer can come while messages remain; they are picked up next time.
    """
    drained = DrainedMessages()
    while len(drained.receipt_handles) < max_messages:
        response = sqs_client.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=min(SQS_MAX_BATCH, max_messages - len(drained.receipt_handles)),
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_timeout,
        )
        messages = response.get("Messages", [])
        if not messages:
            break
        for message in messages:
            drained.receipt_handles.append(message["ReceiptHandle"])
            body = message.get("Body", "")
            try:
                drained.events.extend(parse_notification(body))
            except ValueError as error:
                drained.malformed += 1
                logger.warning(
                    "Dropping SQS message %s that is not an S3 notification (%s): %.*s",
                    message.get("MessageId", "?"),
                    error,
                    _MALFORMED_BODY_PREVIEW_CHARS,
                    body,
                )
    return drained


def delete_messages(sqs_client: SQSClient, queue_url: str, receipt_handles: Sequence[str]) -> None:
    """Acknowledge messages, 10 per DeleteMessageBatch call.

    Every batch is attempted even after one reports failures, so a single stale receipt handle
    does not leave the rest of the queue to be redelivered; the failures are raised at the end.
    """
    failures: list[str] = []
    for batch_start in range(0, len(receipt_handles), SQS_MAX_BATCH):
        batch = receipt_handles[batch_start : batch_start + SQS_MAX_BATCH]
        handle_by_entry_id = {str(index): handle for index, handle in enumerate(batch)}
        response = sqs_client.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": entry_id, "ReceiptHandle": handle}
                for entry_id, handle in handle_by_entry_id.items()
            ],
        )
        for failed in response.get("Failed", []):
            handle = handle_by_entry_id.get(failed["Id"], "?")
            failures.append(
                f"{failed.get('Code', '?')}: {failed.get('Message', '')} (receipt handle {handle})"
            )
    if failures:
        raise RuntimeError(
            f"{len(failures)} of {len(receipt_handles)} SQS messages could not be deleted: "
            + "; ".join(failures)
        )


def _load_json_object(text: str) -> Mapping[str, Any]:
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"message body is not JSON: {error}") from error
    if not isinstance(payload, dict):
        raise ValueError(f"message body is JSON {type(payload).__name__}, not an object")
    return payload


def _parse_payload(payload: Mapping[str, Any], *, allow_sns_envelope: bool) -> list[SourceEvent]:
    if "Records" in payload:
        records = payload["Records"]
        if not isinstance(records, list):
            raise ValueError("'Records' is not a list")
        events = (_parse_record(record) for record in records)
        return [event for event in events if event is not None]
    if payload.get("Event") == "s3:TestEvent":
        return []
    # SNS only wraps once; an envelope inside an envelope is not something S3 produces.
    if allow_sns_envelope and payload.get("Type") == "Notification":
        message = payload.get("Message")
        if not isinstance(message, str):
            raise ValueError("SNS envelope without a string 'Message'")
        return _parse_payload(_load_json_object(message), allow_sns_envelope=False)
    raise ValueError("JSON object is neither an S3 notification nor an SNS envelope of one")


def _parse_record(record: Any) -> SourceEvent | None:
    if not isinstance(record, dict):
        raise ValueError("record is not an object")
    event_name = _require_str(record, "eventName")
    kind = _event_kind(event_name.removeprefix("s3:"))
    if kind is None:
        return None
    s3_section = _require_dict(record, "s3")
    bucket = _require_str(_require_dict(s3_section, "bucket"), "name")
    s3_object = _require_dict(s3_section, "object")
    encoded_key = _require_str(s3_object, "key")
    try:
        # strict: a key whose escapes are not valid UTF-8 is corrupt, and guessing a replacement
        # character would name an object that does not exist.
        key = unquote_plus(encoded_key, errors="strict")
    except UnicodeDecodeError as error:
        raise ValueError(f"object key {encoded_key!r} is not valid URL-encoded UTF-8") from error
    return SourceEvent(
        bucket=bucket,
        key=key,
        kind=kind,
        sequencer=_optional_str(s3_object, "sequencer"),
        etag=_optional_str(s3_object, "eTag"),
    )


def _event_kind(event_name: str) -> EventKind | None:
    category = event_name.partition(":")[0]
    if category == "ObjectCreated":
        return "created"
    if category == "ObjectRemoved":  # Delete and DeleteMarkerCreated alike: the key is gone
        return "removed"
    if event_name.startswith("LifecycleExpiration:"):  # expiry deletes without ObjectRemoved
        return "removed"
    return None


def _require_dict(container: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = container.get(name)
    if not isinstance(value, dict):
        raise ValueError(f"record has no object {name!r}")
    return value


def _require_str(container: Mapping[str, Any], name: str) -> str:
    value = container.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"record has no string {name!r}")
    return value


def _optional_str(container: Mapping[str, Any], name: str) -> str | None:
    value = container.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name!r} is not a string")
    return value or None
