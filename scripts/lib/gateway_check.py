"""Checks that the local CORS gateways (scripts/lib/cors_gateway.py) answer as the servers
behind them do, run by scripts/test against the running stack:

- every refusal of s3s-fs reaches the client unchanged (status, headers, body) through the
  bucket's gateway: a single upload whose bytes are not the declared SHA-256, a part whose bytes
  are not the checksum its URL signed, a part sent to an aborted upload. Each request goes to
  the gateway and, the same bytes with the same Host header, straight to s3s-fs;
- a request on a kept-alive connection through the API's gateway costs within a few
  milliseconds of the same request straight to `cargo lambda watch` (no Nagle delay).

    python3 scripts/lib/gateway_check.py --api URL --token TOKEN --s3-port P --watch-port W

Standard library only. Exits non-zero, naming the case, when a check fails.
"""

import argparse
import http.client
import select
import statistics
import sys
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import local_api  # noqa: E402

# Headers that differ between two answers to the same request.
PER_ANSWER = {"date", "x-amz-request-id", "x-amz-id-2"}
PART = 5 * 1024 * 1024


def send(port, method, url, headers, body):
    """`method url` on a new connection to 127.0.0.1:`port`, with the URL's own Host header
    (so a signature made for the gateway's address verifies at the server behind it). Reads
    the answer even when the server gives it before reading the whole body."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.connect()
    connection.putrequest(method, f"{parts.path}?{parts.query}", skip_host=True, skip_accept_encoding=True)
    connection.putheader("Host", parts.netloc)
    for name, value in headers.items():
        if name.lower() not in ("content-length", "host"):
            connection.putheader(name, value)
    connection.putheader("Content-Length", str(len(body)))
    connection.endheaders()
    for offset in range(0, len(body), 64 * 1024):
        if select.select([connection.sock], [], [], 0)[0]:
            break
        try:
            connection.sock.sendall(body[offset : offset + 64 * 1024])
        except (BrokenPipeError, ConnectionResetError):
            break
    response = connection.getresponse()
    answer = (
        response.status,
        sorted((k.lower(), v) for k, v in response.getheaders() if k.lower() not in PER_ANSWER),
        response.read(),
    )
    connection.close()
    return answer


def same_answer(case, gateway_port, s3_port, method, url, headers, body):
    through = send(gateway_port, method, url, headers, body)
    straight = send(s3_port, method, url, headers, body)
    if through != straight:
        sys.exit(f"error: {case}: the gateway answered {through!r}, s3s-fs answered {straight!r}")
    if through[0] < 400:
        sys.exit(f"error: {case}: s3s-fs accepted it ({through[0]}); the check needs a refusal")
    print(f"  {case}: {through[0]} through the gateway, as from s3s-fs")


def check_refusals(api, token, s3_port):
    patient = local_api.api_json(api, token, "POST", "/api/v1/patients/", {"name": "Gateway Check"})
    try:
        declared, other = b"a" * 4096, b"b" * 4096
        single = local_api.api_json(
            api,
            token,
            "POST",
            "/api/v1/attachments/",
            {
                "patient_id": patient["id"],
                "file_name": "check.txt",
                "mime_type": "text/plain",
                "size": len(declared),
                "sha256": local_api.sha256_base64(declared),
            },
        )
        upload = single["upload"]
        gateway_port = urllib.parse.urlsplit(upload["url"]).port
        same_answer(
            "a single upload of other bytes than its declared SHA-256",
            gateway_port, s3_port, upload["method"], upload["url"], upload["headers"], other,
        )

        declared, other = b"c" * PART, b"d" * PART
        multipart = local_api.api_json(
            api,
            token,
            "POST",
            "/api/v1/attachments/",
            {"patient_id": patient["id"], "file_name": "check.bam", "size": PART, "upload": "multipart"},
        )
        path = f"/api/v1/attachments/{multipart['id']}"
        part = local_api.api_json(
            api, token, "POST", f"{path}/upload-parts", {"part_numbers": [1], "sha256": [local_api.sha256_base64(declared)]}
        )["parts"][0]
        same_answer(
            "a part whose bytes are not the checksum its URL signed",
            gateway_port, s3_port, part["method"], part["url"], part["headers"], other,
        )
        # Deleting a pending multipart attachment aborts its upload.
        local_api.api_json(api, token, "DELETE", path)
        same_answer(
            "a part sent to an aborted upload",
            gateway_port, s3_port, part["method"], part["url"], part["headers"], declared,
        )
    finally:
        local_api.api_json(api, token, "DELETE", f"/api/v1/patients/{patient['id']}")


def kept_alive_ms(port, rounds=30):
    """The median of `rounds` health checks on one kept-alive connection, in ms."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        connection.request("GET", "/api/v1/utils/health-check/")
        response = connection.getresponse()
        response.read()
        timings.append((time.perf_counter() - started) * 1000)
        if response.status != 200:
            sys.exit(f"error: the health check answered {response.status}")
    connection.close()
    return statistics.median(timings[1:])


def check_kept_alive(api_port, watch_port, allowance_ms):
    through, straight = kept_alive_ms(api_port), kept_alive_ms(watch_port)
    print(f"  a kept-alive health check: {through:.1f} ms through the gateway, {straight:.1f} ms straight")
    if through > straight + allowance_ms:
        sys.exit(f"error: the gateway adds {through - straight:.1f} ms to a kept-alive request")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--s3-port", type=int, required=True)
    parser.add_argument("--watch-port", type=int, required=True)
    # Nagle's delay meeting a delayed ACK is about 40 ms; what a Python hop costs is about 1.
    parser.add_argument("--allowance-ms", type=float, default=10.0)
    args = parser.parse_args()
    check_refusals(args.api.rstrip("/"), args.token, args.s3_port)
    check_kept_alive(urllib.parse.urlsplit(args.api).port, args.watch_port, args.allowance_ms)


if __name__ == "__main__":
    main()
