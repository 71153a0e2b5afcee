"""The functions as SAM runs them locally, driven by scripts/sam-local: the real template.yaml
with each function's code pointed at the binary the tests built, every sample event through
`sam local invoke`, then a tour through `sam local start-api`.

    python scripts/lib/sam_local.py prepare OUT_DIR BRIDGE_IP    -> OUT_DIR/template.yaml, env.json
    python scripts/lib/sam_local.py invoke OUT_DIR BRIDGE_IP IMAGE
    python scripts/lib/sam_local.py tour API_URL

Runs with the SAM CLI's Python (its YAML loader knows CloudFormation's tags). The stack's
settings come from the environment (scripts/lib/stack_layout.py); the functions reach the
stack's services at BRIDGE_IP, the Docker bridge's address, where scripts/sam-local forwards
them to the loopback ones.
"""

import base64
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from samcli.yamlhelper import yaml_dump, yaml_parse

sys.path.insert(0, str(Path(__file__).parent))
import local_api  # noqa: E402
import stack_layout  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"

# Settings only a local run needs (AWS has real endpoints, and the defaults of the rest): SAM
# passes a function only the variables its template declares, so the local copy declares these
# for every function. Everything else must be declared by template.yaml itself: a variable it
# forgets is missing here as in AWS.
LOCAL_ONLY = [
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_SQS",
    "S3_FORCE_PATH_STYLE",
    "SMTP_PORT",
    "PASSWORD_RECOVERY_MIN_RESPONSE_MS",
    "MULTIPART_THRESHOLD_BYTES",
    "DATABASE_PORT",
    "FIRST_SUPERUSER_PASSWORD",
]


def fail(message):
    sys.exit(f"error: {message}")


def functions_of(template):
    """{logical id: binary} of every function SAM builds with cargo lambda."""
    found = {}
    for logical_id, resource in template["Resources"].items():
        binary = resource.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
        if resource.get("Type") == "AWS::Serverless::Function" and binary:
            found[logical_id] = binary
    return found


def prepare(out: Path, bridge_ip: str):
    """A built tree as `sam build` makes one, from the binaries the tests built (a debug build;
    `sam build` would build each function again): template.yaml as it is, but each function's
    code the folder holding its `bootstrap`, and the local-only settings declared."""
    template = yaml_parse((ROOT / "template.yaml").read_text())
    variables = template["Globals"]["Function"].setdefault("Environment", {}).setdefault("Variables", {})
    for name in LOCAL_ONLY:
        variables.setdefault(name, "")
    out.mkdir(parents=True, exist_ok=True)
    for logical_id, binary in functions_of(template).items():
        resource = template["Resources"][logical_id]
        del resource["Metadata"]["BuildMethod"], resource["Metadata"]["BuildProperties"]
        if not resource["Metadata"]:
            del resource["Metadata"]
        folder = out / logical_id
        folder.mkdir(exist_ok=True)
        bootstrap, built = folder / "bootstrap", ROOT / "target" / "debug" / binary
        if not built.is_file():
            fail(f"{built} is missing: build the functions first (cargo build --workspace --bins)")
        bootstrap.unlink(missing_ok=True)
        shutil.copy2(built, bootstrap)
        resource["Properties"]["CodeUri"] = logical_id
    (out / "template.yaml").write_text(yaml_dump(template))
    (out / "env.json").write_text(json.dumps(environment(bridge_ip), indent=1))


def environment(bridge_ip):
    """--env-vars: the stack's settings as the functions read them (scripts/lib/stack_layout.py),
    with the addresses the containers reach, and what SAM cannot resolve in the template
    (ids of resources a deployment creates) set as a local run has them."""
    settings = {}
    for line in stack_layout.functions_env(dict(os.environ)).splitlines():
        name, value = line.split("=", 1)
        settings[name] = value.replace("127.0.0.1", bridge_ip)
    database = urllib.parse.urlsplit(os.environ["DATABASE_URL"])
    settings.update(
        {
            # The database secret names 127.0.0.1; these say where it is from a container.
            "DATABASE_HOST": bridge_ip,
            "DATABASE_PORT": str(database.port or 5432),
            "DATABASE_NAME": "",
            # No CloudFront in front: no origin secret to check.
            "ORIGIN_SECRET_ARN": "",
        }
    )
    return {
        "Parameters": settings,
        # One login for every function here (a deployment makes one per function).
        "MigrateFunction": {
            "DATABASE_OWNER_SECRET_ARN": os.environ["DATABASE_SECRET_ARN"],
            "DATABASE_FUNCTION_SECRET_ARNS": "",
            "DATABASE_APP_SECRET_ARN": "",
            "FIRST_SUPERUSER_PASSWORD_SECRET_ARN": "",
            "FIRST_SUPERUSER_PASSWORD": os.environ["FIRST_SUPERUSER_PASSWORD"],
        },
    }


def sam_invoke(out: Path, image, logical_id, event: dict):
    """The function's answer to `event` through `sam local invoke` (SAM's emulator in a
    container of IMAGE), as JSON."""
    event_file = out / "event.json"
    event_file.write_text(json.dumps(event))
    started = time.monotonic()
    run = subprocess.run(
        [
            "sam", "local", "invoke", logical_id,
            "--template", str(out / "template.yaml"),
            "--event", str(event_file),
            "--env-vars", str(out / "env.json"),
            "--invoke-image", image,
            "--skip-pull-image",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    if run.returncode != 0 or not lines:
        sys.stderr.write(run.stderr[-3000:])
        fail(f"sam local invoke {logical_id} failed ({run.returncode})")
    try:
        answer = json.loads(lines[-1])
    except json.JSONDecodeError:
        sys.stderr.write(run.stdout[-2000:] + run.stderr[-2000:])
        fail(f"sam local invoke {logical_id} answered no JSON")
    return answer, time.monotonic() - started


class CloudFormation(http.server.BaseHTTPRequestHandler):
    """The custom resource's ResponseURL: keeps what the function reports."""

    reports = []

    def do_PUT(self):
        length = int(self.headers.get("Content-Length") or 0)
        CloudFormation.reports.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):  # noqa: A002
        pass


def invoke_all(out: Path, bridge_ip, image):
    template = yaml_parse((ROOT / "template.yaml").read_text())
    function_of = {binary: logical_id for logical_id, binary in functions_of(template).items()}
    index = json.loads((EVENTS / "index.json").read_text())

    def invoke(path, event=None):
        group = path.split("/")[0]
        if group not in function_of:
            fail(f"events/{path}: no function of template.yaml builds the binary {group}")
        event = event if event is not None else json.loads((EVENTS / path).read_text())
        answer, seconds = sam_invoke(out, image, function_of[group], event)
        return answer, seconds, function_of[group]

    # The migrate function first, as CloudFormation calls it: it migrates the empty database,
    # makes the first superuser and the token keys, and reports to the ResponseURL.
    server = http.server.HTTPServer((bridge_ip, 0), CloudFormation)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    event = json.loads((EVENTS / "migrate/custom-resource-create.json").read_text())
    event["ResponseURL"] = f"http://{bridge_ip}:{server.server_port}/cloudformation-response"
    _, seconds, function = invoke("migrate/custom-resource-create.json", event)
    server.shutdown()
    report = CloudFormation.reports[-1] if CloudFormation.reports else {}
    if report.get("Status") != "SUCCESS":
        fail(f"migrate/custom-resource-create.json: CloudFormation was told {report!r}")
    print(f"  {function:<26} migrate/custom-resource-create.json: SUCCESS reported ({seconds:.1f} s)")
    expectations = {
        "migrate/direct-invoke.json": lambda a: a.get("applied") == [],
        "migrate/schedule-audit-retention.json": lambda a: isinstance(a, dict),
        "attachment-events/s3-object-created.json": lambda a: isinstance(a, dict),
        "attachment-events/schedule.json": lambda a: isinstance(a, dict),
        # A job that does not exist (cancelled): done, nothing to retry.
        "bulk-export/sqs-plan.json": lambda a: a == {"batchItemFailures": []},
    }
    for path in index["other"]:
        if path == "migrate/custom-resource-create.json":
            continue
        if path not in expectations:
            fail(f"events/{path}: scripts/lib/sam_local.py does not know what it answers")
        answer, seconds, function = invoke(path)
        if not expectations[path](answer):
            fail(f"events/{path}: answered {json.dumps(answer)[:500]}")
        print(f"  {function:<26} {path}: {json.dumps(answer)[:80]} ({seconds:.1f} s)")

    token = None
    for entry in index["http"]:
        path, expected = entry["event"], entry["status"]
        text = (EVENTS / path).read_text()
        if "{{superuser_token}}" in text:
            if token is None:
                fail(f"events/{path} needs a token, and no login came before it")
            text = text.replace("{{superuser_token}}", token)
        answer, seconds, function = invoke(path, json.loads(text))
        status, body = answer.get("statusCode"), answer.get("body") or ""
        if answer.get("isBase64Encoded"):
            body = base64.b64decode(body).decode()
        if status != expected:
            fail(f"events/{path}: {status}, expected {expected}: {body[:500]}")
        if body:
            try:
                parsed = json.loads(body)
            except json.JSONDecodeError:
                parsed = None
                if "html" not in path:
                    fail(f"events/{path}: the body is not JSON: {body[:300]}")
            if path == "auth/login-access-token.json":
                token = parsed["access_token"]
            # Each interface's error shape: the JSON API's detail, FHIR's OperationOutcome, and
            # RFC 6749's error under /api/v1/smart (the OAuth endpoints).
            shapes = ["detail", "issue"] + (["error"] if path.startswith("auth/smart-") else [])
            if isinstance(parsed, dict) and status >= 400 and not any(k in parsed for k in shapes):
                fail(f"events/{path}: an error in none of its interface's shapes: {body[:300]}")
        print(f"  {function:<26} {path}: {status} ({seconds:.1f} s)")


def request(method, url, token=None, body=None, raw=None, headers=None):
    data, sent = raw, dict(headers or {})
    if token:
        sent["Authorization"] = f"Bearer {token}"
    if body is not None:
        data, sent["Content-Type"] = json.dumps(body).encode(), "application/json"
    req = urllib.request.Request(url, data=data, headers=sent, method=method)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def expect(step, answer, status):
    if answer[0] != status:
        fail(f"start-api tour, {step}: {answer[0]}, expected {status}: {answer[2][:300]!r}")
    print(f"  {step}: {status}")
    return json.loads(answer[2]) if answer[2] else None


def tour(api):
    """Through `sam local start-api`: what a client does, end to end."""
    expect("health check", request("GET", f"{api}/api/v1/utils/health-check/"), 200)
    token = local_api.login(api, os.environ["FIRST_SUPERUSER"], os.environ["FIRST_SUPERUSER_PASSWORD"])
    print("  login: 200")
    expect("no token", request("GET", f"{api}/api/v1/patients/"), 401)
    patient = expect(
        "patient create",
        request("POST", f"{api}/api/v1/patients/", token, {"name": "Ana Sam Local", "medical_history": "asthma"}),
        200,
    )
    found = expect("patient search", request("GET", f"{api}/api/v1/patients/?name_text=sam%20local", token), 200)
    if patient["id"] not in [p["id"] for p in found["data"]]:
        fail("start-api tour: the search did not find the new patient")
    content = f"bytes through sam local {time.time()}\n".encode()
    created = expect(
        "attachment create",
        request(
            "POST",
            f"{api}/api/v1/attachments/",
            token,
            {
                "patient_id": patient["id"],
                "file_name": "tour.txt",
                "mime_type": "text/plain",
                "size": len(content),
                "sha256": local_api.sha256_base64(content),
            },
        ),
        200,
    )
    upload = created["upload"]
    headers = {k: v for k, v in upload["headers"].items() if k.lower() != "content-length"}
    status = request(upload["method"], upload["url"], raw=content, headers=headers)
    if status[0] != 200:
        fail(f"start-api tour, upload through the presigned URL: {status[0]} {status[2][:300]!r}")
    print("  upload through the presigned URL: 200")
    redirect = request("GET", f"{api}/api/v1/attachments/{created['id']}/content", token)
    if redirect[0] != 302:
        fail(f"start-api tour, download: {redirect[0]}")
    downloaded = urllib.request.urlopen(redirect[1]["Location"], timeout=60).read()
    if downloaded != content:
        fail("start-api tour: the downloaded bytes differ from the uploaded ones")
    print("  download redirect, the same bytes: 302")
    read = expect("attachment read", request("GET", f"{api}/api/v1/attachments/{created['id']}", token), 200)
    if read["status"] != "uploaded":
        fail(f"start-api tour: the attachment is {read['status']} after its upload")
    fhir = {"Accept": "application/fhir+json"}
    resource = expect("FHIR read", request("GET", f"{api}/fhir/R4/Patient/{patient['id']}", token, headers=fhir), 200)
    if resource["resourceType"] != "Patient":
        fail("start-api tour: FHIR read answered no Patient")
    bundle = expect("FHIR search", request("GET", f"{api}/fhir/R4/Patient?_id={patient['id']}", token, headers=fhir), 200)
    if bundle.get("total") != 1:
        fail(f"start-api tour: the FHIR search found {bundle.get('total')}")
    events = expect("audit read", request("GET", f"{api}/api/v1/audit-events/?patient_id={patient['id']}", token), 200)
    if not events["data"]:
        fail("start-api tour: no audit event for the patient")
    expect("patient delete", request("DELETE", f"{api}/api/v1/patients/{patient['id']}", token), 200)


def main():
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "prepare" and len(sys.argv) == 4:
        prepare(Path(sys.argv[2]), sys.argv[3])
    elif command == "invoke" and len(sys.argv) == 5:
        invoke_all(Path(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif command == "tour" and len(sys.argv) == 3:
        tour(sys.argv[2].rstrip("/"))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
