"""S3 → SQS notifications through moto's real HTTP server, plus the body shapes moto never sends.

moto encodes keys with `quote_plus` ("/" becomes "%2F"), while AWS leaves "/" alone; both decode
the same way, so the AWS-documented shape is covered by literal bodies in the unit tests below.
"""

import json
from typing import Any, cast

import pytest

from lorechat_pipeline.core.events import (
    SourceEvent,
    delete_messages,
    drain_queue,
    latest_per_key,
    parse_notification,
)


def visible_and_in_flight(sqs_client: Any, queue_url: str) -> tuple[int, int]:
    # Received-but-undeleted messages are invisible, so an empty receive proves nothing about
    # deletion; the queue's own counters do.
    attributes = sqs_client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


def s3_record(
    event_name: str,
    encoded_key: str,
    *,
    bucket: str = "docs",
    sequencer: str | None = None,
    etag: str | None = None,
) -> dict[str, Any]:
    s3_object: dict[str, Any] = {"key": encoded_key, "size": 3}
    if sequencer is not None:
        s3_object["sequencer"] = sequencer
    if etag is not None:
        s3_object["eTag"] = etag
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": event_name,
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket}, "object": s3_object},
    }


def notification(*records: dict[str, Any]) -> str:
    return json.dumps({"Records": list(records)})


def sns_envelope(message: str) -> str:
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:source-events",
            "Subject": "Amazon S3 Notification",
            "Message": message,
            "Timestamp": "2024-05-01T12:00:00.000Z",
        }
    )


# --- through moto's HTTP server -----------------------------------------------------------------


def test_s3_notifications_drain_to_decoded_keys_and_kinds(
    s3_client: Any, sqs_client: Any, queue_url: str, notifying_bucket: str
) -> None:
    keys = [
        "reports/2024/q1 summary.md",
        "notes/é résumé.md",
        "c++ notes/a+b.md",
        "deep/nested/prefix/plain.txt",
    ]
    etags = {}
    for key in keys:
        response = s3_client.put_object(Bucket=notifying_bucket, Key=key, Body=b"body")
        etags[key] = response["ETag"].strip('"')
    s3_client.delete_object(Bucket=notifying_bucket, Key="c++ notes/a+b.md")

    drained = drain_queue(sqs_client, queue_url)

    assert sorted((event.key, event.kind) for event in drained.events) == sorted(
        [(key, "created") for key in keys] + [("c++ notes/a+b.md", "removed")]
    )
    assert {event.bucket for event in drained.events} == {notifying_bucket}
    for event in drained.events:
        if event.kind == "created":
            assert event.etag == etags[event.key]
    # The s3:TestEvent sent when the configuration was saved has no records but must be deleted too.
    assert len(drained.receipt_handles) == len(keys) + 2
    assert drained.malformed == 0
    assert visible_and_in_flight(sqs_client, queue_url) == (0, len(keys) + 2), "drain deleted"

    delete_messages(sqs_client, queue_url, drained.receipt_handles)

    assert visible_and_in_flight(sqs_client, queue_url) == (0, 0)


def test_malformed_messages_are_counted_and_still_handed_back_for_deletion(
    sqs_client: Any, queue_url: str
) -> None:
    sqs_client.send_message(QueueUrl=queue_url, MessageBody="not json at all")
    sqs_client.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"hello": "world"}))
    sqs_client.send_message(
        QueueUrl=queue_url,
        MessageBody=sns_envelope(notification(s3_record("ObjectCreated:Put", "kept.md"))),
    )

    drained = drain_queue(sqs_client, queue_url)

    assert drained.malformed == 2
    assert [event.key for event in drained.events] == ["kept.md"]
    assert len(drained.receipt_handles) == 3
    delete_messages(sqs_client, queue_url, drained.receipt_handles)
    assert visible_and_in_flight(sqs_client, queue_url) == (0, 0)


def test_drain_stops_at_max_messages_and_deletes_in_batches_of_ten(
    sqs_client: Any, queue_url: str
) -> None:
    bodies = [notification(s3_record("ObjectCreated:Put", f"doc-{n:02d}.md")) for n in range(25)]
    for batch_start in range(0, len(bodies), 10):
        sqs_client.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(n), "MessageBody": body}
                for n, body in enumerate(bodies[batch_start : batch_start + 10])
            ],
        )

    first = drain_queue(sqs_client, queue_url, max_messages=12)
    assert len(first.receipt_handles) == 12
    assert visible_and_in_flight(sqs_client, queue_url) == (13, 12)

    rest = drain_queue(sqs_client, queue_url)
    assert len(rest.receipt_handles) == 13
    drained_keys = {event.key for event in first.events + rest.events}
    assert drained_keys == {f"doc-{n:02d}.md" for n in range(25)}

    delete_messages(sqs_client, queue_url, first.receipt_handles + rest.receipt_handles)
    assert visible_and_in_flight(sqs_client, queue_url) == (0, 0)


def test_delete_messages_raises_on_failed_entries_after_deleting_the_rest(
    sqs_client: Any, queue_url: str
) -> None:
    sqs_client.send_message(QueueUrl=queue_url, MessageBody=notification())
    drained = drain_queue(sqs_client, queue_url)
    assert len(drained.receipt_handles) == 1

    with pytest.raises(RuntimeError, match=r"1 of 2 .*ReceiptHandleIsInvalid"):
        delete_messages(sqs_client, queue_url, [*drained.receipt_handles, "not-a-receipt-handle"])

    assert visible_and_in_flight(sqs_client, queue_url) == (0, 0)


def test_delete_messages_with_nothing_to_delete_makes_no_call() -> None:
    class NoCalls:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"unexpected SQS call {name}")

    delete_messages(cast(Any, NoCalls()), "https://sqs.invalid/queue", [])


# --- body shapes --------------------------------------------------------------------------------

# AWS's documented record shape: keys URL-encoded with "+" for spaces and "/" left as is.
AWS_DOCUMENTED_BODY = """{
   "Records":[
      {
         "eventVersion":"2.1",
         "eventSource":"aws:s3",
         "awsRegion":"us-west-2",
         "eventTime":"1970-01-01T00:00:00.000Z",
         "eventName":"ObjectCreated:Put",
         "userIdentity":{"principalId":"AIDAJDPLRKLG7UEXAMPLE"},
         "requestParameters":{"sourceIPAddress":"127.0.0.1"},
         "responseElements":{
            "x-amz-request-id":"C3D13FE58DE4C810",
            "x-amz-id-2":"FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"
         },
         "s3":{
            "s3SchemaVersion":"1.0",
            "configurationId":"testConfigRule",
            "bucket":{
               "name":"amzn-s3-demo-bucket",
               "ownerIdentity":{"principalId":"A3NL1KOZZKExample"},
               "arn":"arn:aws:s3:::amzn-s3-demo-bucket"
            },
            "object":{
               "key":"notes/%C3%A9+r%C3%A9sum%C3%A9.md",
               "size":1024,
               "eTag":"d41d8cd98f00b204e9800998ecf8427e",
               "versionId":"096fKKXTRTtl3on89fVO.nfljtsv6qko",
               "sequencer":"0055AED6DCD90281E5"
            }
         }
      }
   ]
}"""

AWS_TEST_EVENT_BODY = """{
   "Service":"Amazon S3",
   "Event":"s3:TestEvent",
   "Time":"2014-10-13T15:57:02.089Z",
   "Bucket":"amzn-s3-demo-bucket",
   "RequestId":"5582815E1AEA5ADF",
   "HostId":"8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE"
}"""


def test_aws_documented_record_is_decoded() -> None:
    assert parse_notification(AWS_DOCUMENTED_BODY) == [
        SourceEvent(
            bucket="amzn-s3-demo-bucket",
            key="notes/é résumé.md",
            kind="created",
            sequencer="0055AED6DCD90281E5",
            etag="d41d8cd98f00b204e9800998ecf8427e",
        )
    ]


@pytest.mark.parametrize(
    ("encoded_key", "decoded_key"),
    [
        ("notes/%C3%A9+r%C3%A9sum%C3%A9.md", "notes/é résumé.md"),  # AWS
        ("notes%2F%C3%A9+r%C3%A9sum%C3%A9.md", "notes/é résumé.md"),  # moto's quote_plus
        ("c%2B%2B+notes/a%2Bb.md", "c++ notes/a+b.md"),  # a literal "+" is escaped, "+" is space
        ("100%25+done.txt", "100% done.txt"),
    ],
)
def test_keys_are_url_decoded_with_plus_as_space(encoded_key: str, decoded_key: str) -> None:
    (event,) = parse_notification(notification(s3_record("ObjectCreated:Put", encoded_key)))
    assert event.key == decoded_key


def test_test_event_yields_nothing() -> None:
    assert parse_notification(AWS_TEST_EVENT_BODY) == []


def test_sns_envelope_is_unwrapped() -> None:
    assert parse_notification(sns_envelope(AWS_DOCUMENTED_BODY)) == parse_notification(
        AWS_DOCUMENTED_BODY
    )
    assert parse_notification(sns_envelope(AWS_TEST_EVENT_BODY)) == []


def test_delete_marker_is_a_removal_and_other_events_are_ignored() -> None:
    body = notification(
        s3_record("ObjectRemoved:DeleteMarkerCreated", "gone.md", sequencer="0A"),
        s3_record("ObjectRemoved:Delete", "also+gone.md", sequencer="0B"),
        s3_record("ObjectRestore:Completed", "restored.md"),
        s3_record("ObjectTagging:Put", "tagged.md"),
        s3_record("ObjectCreated:CompleteMultipartUpload", "big.pdf", etag="abc-2"),
        s3_record("LifecycleExpiration:Delete", "expired.md", sequencer="0C"),
    )
    assert parse_notification(body) == [
        SourceEvent("docs", "gone.md", "removed", "0A", None),
        SourceEvent("docs", "also gone.md", "removed", "0B", None),
        SourceEvent("docs", "big.pdf", "created", None, "abc-2"),
        SourceEvent("docs", "expired.md", "removed", "0C", None),
    ]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("", id="empty"),
        pytest.param("not json", id="not-json"),
        pytest.param("[]", id="json-array"),
        pytest.param("null", id="json-null"),
        pytest.param('{"hello": "world"}', id="unrelated-object"),
        pytest.param('{"Records": {}}', id="records-not-a-list"),
        pytest.param('{"Records": ["x"]}', id="record-not-an-object"),
        pytest.param(
            json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {}}]}),
            id="record-without-bucket-and-object",
        ),
        pytest.param(notification(s3_record("ObjectCreated:Put", "")), id="record-with-empty-key"),
        pytest.param(
            notification(s3_record("ObjectCreated:Put", "bad-%FF-utf8")), id="key-not-utf8"
        ),
        pytest.param(
            notification(s3_record("ObjectCreated:Put", "a.md"), {"eventName": 7}),
            id="one-bad-record-spoils-the-message",
        ),
        pytest.param(
            json.dumps({"Type": "Notification", "Message": {"Records": []}}),
            id="sns-message-not-a-string",
        ),
        pytest.param(sns_envelope("not json"), id="sns-message-not-json"),
        pytest.param(sns_envelope(sns_envelope(AWS_TEST_EVENT_BODY)), id="sns-in-sns"),
    ],
)
def test_malformed_bodies_raise_value_error(body: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - every message is acceptable here
        parse_notification(body)


# --- collapsing to one event per object ---------------------------------------------------------


def event(key: str, kind: str, sequencer: str | None, *, bucket: str = "docs") -> SourceEvent:
    return SourceEvent(bucket=bucket, key=key, kind=kind, sequencer=sequencer, etag=None)


def test_latest_per_key_compares_sequencers_after_zero_padding() -> None:
    # As plain strings "FF" > "0100"; padded, 0x0100 is the later event.
    newer = event("a.md", "removed", "0100")
    older = event("a.md", "created", "FF")
    assert latest_per_key([newer, older]) == [newer]
    assert latest_per_key([older, newer]) == [newer]


def test_latest_per_key_ignores_hex_case() -> None:
    newer = event("a.md", "removed", "00ab")
    older = event("a.md", "created", "00AA")
    assert latest_per_key([newer, older]) == [newer]


def test_latest_per_key_falls_back_to_input_order_on_ties_and_missing_sequencers() -> None:
    first, second = event("a.md", "created", "0A"), event("a.md", "removed", "0A")
    assert latest_per_key([first, second]) == [second]
    # moto never sends a sequencer: arrival order is all there is.
    first, second = event("b.md", "created", None), event("b.md", "removed", None)
    assert latest_per_key([first, second]) == [second]
    # A sequenced event is placed in S3's order; an unsequenced one cannot outrank it.
    sequenced, unsequenced = event("c.md", "created", "01"), event("c.md", "removed", None)
    assert latest_per_key([sequenced, unsequenced]) == [sequenced]


def test_latest_per_key_keeps_objects_apart_and_in_first_seen_order() -> None:
    events = [
        event("b.md", "created", "01"),
        event("a.md", "created", "01"),
        event("a.md", "created", "01", bucket="other"),
        event("b.md", "removed", "02"),
    ]
    assert latest_per_key(events) == [events[3], events[1], events[2]]
    assert latest_per_key(iter(events)) == [events[3], events[1], events[2]]
    assert latest_per_key([]) == []
