"""The bulk export queue of the local stack (SQS on moto), set up as template.yaml's, and the
part AWS plays between the queue and the worker: the event source mapping.

    export_queue.py create --queue-url URL [--visibility-timeout S]
        Creates the queue and its dead-letter queue (five receives, then dead-lettered), if
        missing.
    export_queue.py poll --queue-url URL --invoke-url URL
        Receives batches and invokes the worker with the same SQS event JSON AWS sends (through
        cargo lambda watch's Lambda Invoke endpoint), then deletes the messages the worker did
        not report in `batchItemFailures`; those come back after the visibility timeout, as in
        AWS. Runs until stopped (scripts/dev and scripts/test stop it with the stack).
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

import boto3

DEAD_LETTER_AFTER = 5


def sqs():
    return boto3.client("sqs")


def names(queue_url: str) -> tuple[str, str]:
    name = queue_url.rstrip("/").rsplit("/", 1)[1]
    return name, f"{name}-dlq"


def create(queue_url: str, visibility_timeout: int) -> None:
    client = sqs()
    name, dlq_name = names(queue_url)
    dlq_url = client.create_queue(QueueName=dlq_name)["QueueUrl"]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    client.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(visibility_timeout),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": DEAD_LETTER_AFTER}
            ),
        },
    )


def event_of(messages: list, queue_arn: str, region: str) -> dict:
    """The Lambda event of an SQS event source mapping for `messages`."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


def invoke(invoke_url: str, event: dict) -> dict | None:
    """The worker's batch response, or None when the invocation itself failed."""
    request = urllib.request.Request(
        invoke_url,
        data=json.dumps(event).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=900) as response:
            return json.loads(response.read() or b"{}")
    except (urllib.error.URLError, TimeoutError, ValueError) as error:
        print(f"export worker invocation failed: {error}", file=sys.stderr, flush=True)
        return None


def poll(queue_url: str, invoke_url: str) -> None:
    client = sqs()
    queue_arn = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    region = client.meta.region_name
    while True:
        try:
            received = client.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=1,
                WaitTimeSeconds=5,
                MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
        except Exception as error:  # the local server restarting: try again shortly
            print(f"receive failed: {error}", file=sys.stderr, flush=True)
            time.sleep(1)
            continue
        if not received:
            continue
        response = invoke(invoke_url, event_of(received, queue_arn, region))
        if response is None:
            continue
        failed = {f.get("itemIdentifier") for f in response.get("batchItemFailures", [])}
        for message in received:
            if message["MessageId"] not in failed:
                client.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("create")
    made.add_argument("--queue-url", required=True)
    made.add_argument("--visibility-timeout", type=int, default=30)
    polling = commands.add_parser("poll")
    polling.add_argument("--queue-url", required=True)
    polling.add_argument("--invoke-url", required=True)
    args = parser.parse_args()
    if args.command == "create":
        create(args.queue_url, args.visibility_timeout)
    else:
        poll(args.queue_url, args.invoke_url)


if __name__ == "__main__":
    main()
