"""Publishes the built web console (web/dist) to a deployed stack: every file to the console
bucket with its content type and caching (hashed assets cached for a year, index.html always
revalidated), the assets before the index that names them, then a CloudFront invalidation of
the index. Old assets are kept, so a tab opened before the release keeps working; the bucket's
lifecycle rule expires replaced versions."""

import argparse
import mimetypes
import pathlib
import time

import boto3

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


def stack_outputs(cloudformation, stack):
    described = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}


def upload(s3, bucket, dist):
    files = sorted(p for p in dist.rglob("*") if p.is_file())
    # The index last: it must never name an asset that is not there yet.
    files.sort(key=lambda p: p.name == "index.html")
    for path in files:
        key = path.relative_to(dist).as_posix()
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type in ("application/javascript", "image/svg+xml"):
            content_type += "; charset=utf-8"
        cache = IMMUTABLE if key.startswith("assets/") else REVALIDATE
        s3.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": content_type, "CacheControl": cache})
        print(f"  {key} ({content_type}, {cache})")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stack", required=True)
    parser.add_argument("--dist", required=True, type=pathlib.Path)
    parser.add_argument("--outputs-only", action="store_true", help="print the outputs the build needs and stop")
    args = parser.parse_args()

    session = boto3.session.Session()
    outputs = stack_outputs(session.client("cloudformation"), args.stack)
    if args.outputs_only:
        print(f"{outputs['ApiUrl']} https://{outputs['AttachmentsBucketDomain']}")
        return
    upload(session.client("s3"), outputs["ConsoleBucketName"], args.dist)
    cloudfront = session.client("cloudfront")
    cloudfront.create_invalidation(
        DistributionId=outputs["ConsoleDistributionId"],
        InvalidationBatch={"Paths": {"Quantity": 2, "Items": ["/", "/index.html"]}, "CallerReference": str(time.time_ns())},
    )
    print(f"console published: {outputs['ConsoleUrl']}")


if __name__ == "__main__":
    main()
