"""Sends hostile requests to a running local API, one after another, and checks that none is
answered with a 5xx or a dropped connection (most are 4xx; a few crafted values are harmless
and answer 200, which the summary counts) and that the health check still answers afterwards. Used by scripts/hostile-check against `cargo lambda watch --release`.

    python3 scripts/lib/hostile.py API_URL TOKEN SUPERUSER_TOKEN [--count 1000]

Prints one summary line (`hostile: N requests, statuses {...}`) and exits non-zero on the first
5xx or unanswered request. Standard library only.
"""

import argparse
import http.client
import json
import sys
import urllib.parse
import uuid

# Text that has broken parsers elsewhere: multi-byte characters where a byte offset lands,
# combining marks, right-to-left overrides, NUL, lone surrogates (as JSON escapes), huge values.
NASTY = [
    "2024-01-01\u3000\u3000\u3000\u3000T00:00Z",
    "2024-01-01T00:00\u3000Z",
    "\u00e9\u0301\u0301\u0301",
    "\u202etxt.exe",
    "a\x00b",
    "\\ud800",
    "9" * 40,
    "-" * 1000,
    "\U0001f600" * 300,
    "x" * 20000,
    "",
    " ",
    "%",
    "%zz",
    "..%2F..%2Fetc%2Fpasswd",
    "' OR 1=1 --",
    "Patient/../../Patient",
    "ge2024-13-45",
    "eq\u0661\u0662\u0663",
    "-" * 1000,
    "-(" * 400 + "asthma",
]

FHIR_SEARCHES = [
    ("Patient", ["_lastUpdated", "birthdate", "name", "name:exact", "name:contains", "identifier",
                 "_id", "_count", "_total", "_cursor", "_sort", "_format", "_summary", "family",
                 "birthdate:missing", "patient.identifier", "_include", "_has:Observation:patient:code"]),
    ("DocumentReference", ["patient", "subject", "subject:Patient", "contenttype", "date", "_count",
                           "_cursor", "_revinclude"]),
    ("AuditEvent", ["patient", "date", "agent", "action", "outcome", "_count", "_cursor"]),
]

JSON_SEARCHES = [
    ("/api/v1/patients/", ["name_text", "name_exact", "history_text", "has_attachment_mime_type",
                           "dob_from", "dob_to", "sort", "skip", "limit", "count", "cursor"]),
    ("/api/v1/attachments/", ["patient_id", "skip", "limit", "status"]),
    ("/api/v1/audit-events/", ["actor_id", "patient_id", "action", "outcome", "since", "until",
                               "cursor", "limit"]),
]


def hostile_requests(token: str, superuser: str):
    """Yields (method, path, headers, body) for ever, cycling through the shapes."""
    auth = {"Authorization": f"Bearer {token}"}
    admin = {"Authorization": f"Bearer {superuser}"}
    fhir_json = {"Content-Type": "application/fhir+json"}
    n = 0
    while True:
        value = NASTY[n % len(NASTY)]
        quoted = urllib.parse.quote(value, safe="")
        for resource, params in FHIR_SEARCHES:
            for name in params:
                headers = admin if resource == "AuditEvent" else auth
                yield "GET", f"/fhir/R4/{resource}?{urllib.parse.quote(name, safe=':._')}={quoted}", headers, None
        for path, params in JSON_SEARCHES:
            for name in params:
                headers = admin if "audit" in path else auth
                yield "GET", f"{path}?{name}={quoted}", headers, None
        # Invalid UTF-8, percent-encoded, in a query and in a path id.
        yield "GET", "/fhir/R4/Patient?name=%ff%fe%80", auth, None
        yield "GET", "/api/v1/patients/%ff%fe", auth, None
        yield "GET", f"/fhir/R4/Patient/{quoted}", auth, None
        yield "GET", f"/fhir/R4/Binary/{quoted}/$presigned-url", auth, None
        # Conditional create and versioned writes with crafted headers.
        patient = json.dumps({"resourceType": "Patient", "name": [{"text": value or "x"}],
                              "birthDate": value})
        yield "POST", "/fhir/R4/Patient", {**auth, **fhir_json,
                                           "If-None-Exist": f"birthdate={value}".encode("utf-8", "surrogatepass").decode("latin-1")}, patient
        yield "PUT", f"/fhir/R4/Patient/{uuid.uuid4()}", {**auth, **fhir_json, "If-Match": 'W/"' + quoted[:200] + '"'}, patient
        yield "POST", "/fhir/R4/DocumentReference", {**auth, **fhir_json}, json.dumps(
            {"resourceType": "DocumentReference", "status": value, "subject": {"reference": value},
             "content": [{"attachment": {"contentType": value, "title": value}}]})
        # JSON bodies: wrong types, deep nesting, a lone surrogate escape, not JSON at all.
        yield "POST", "/api/v1/patients/", {**auth, "Content-Type": "application/json"}, json.dumps(
            {"name": value, "dob": value, "contact_info": value, "medical_history": [value]})
        yield "POST", "/api/v1/patients/", {**auth, "Content-Type": "application/json"}, '{"name": "\\ud800"}'
        yield "POST", "/api/v1/patients/", {**auth, "Content-Type": "application/json"}, "[" * 5000
        yield "POST", "/api/v1/attachments/", {**auth, "Content-Type": "application/json"}, json.dumps(
            {"patient_id": value, "filename": value, "content_type": value, "size": value})
        yield "POST", "/api/v1/login/access-token", {"Content-Type": "application/x-www-form-urlencoded"}, \
            f"username={quoted}&password={quoted}"
        # Tokens that are not tokens.
        yield "GET", "/api/v1/users/me", {"Authorization": f"Bearer {value[:4000]}".encode("utf-8").decode("latin-1")}, None
        n += 1


def send(connection: http.client.HTTPConnection, method, path, headers, body):
    connection.request(method, path, body=body.encode("utf-8", "surrogatepass") if body else None,
                       headers=headers)
    response = connection.getresponse()
    text = response.read()
    return response.status, text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("api")
    parser.add_argument("token")
    parser.add_argument("superuser_token")
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    url = urllib.parse.urlsplit(args.api)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    statuses: dict = {}
    requests = hostile_requests(args.token, args.superuser_token)
    for i in range(args.count):
        method, path, headers, body = next(requests)
        try:
            status, text = send(connection, method, path, headers, body)
        except (http.client.HTTPException, OSError) as error:
            sys.exit(f"error: request {i} {method} {path[:120]!r}: no answer ({error})")
        statuses[status] = statuses.get(status, 0) + 1
        if status >= 500:
            sys.exit(f"error: request {i} {method} {path[:120]!r}: {status} {text[:300]!r}")
    status, text = send(connection, "GET", "/api/v1/utils/health-check/", {}, None)
    if status != 200 or text.strip() != b"true":
        sys.exit(f"error: the health check after the hostile requests answered {status} {text[:200]!r}")
    print(f"hostile: {args.count} requests, statuses {dict(sorted(statuses.items()))}; health check: 200 true")


if __name__ == "__main__":
    main()
