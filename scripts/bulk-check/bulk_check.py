"""FHIR Bulk Data export against the running API, driven by a client we did not write: SMART's
smart-fetch (SMART Backend Services with an ES384 key, kick-off, polling, downloads). A system
export, a group export, `_since` and `_typeFilter`; every NDJSON line validated by the FHIR R4
models of SMART's Python client in strict mode, and the counts checked against the API's own
exact counts.

Usage: bulk_check.py --api URL --token SUPERUSER_TOKEN --out DIR [--smart-fetch PATH]"""

import argparse
import gzip
import json
import pathlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

from fhirclient.models.fhirelementfactory import FHIRElementFactory
from jwcrypto import jwk

TYPES = ["Patient", "DocumentReference"]


def request(method, url, token, body=None, content_type="application/json"):
    """(status, JSON answer) of one request with a bearer token."""
    sent = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
        method=method,
    )
    try:
        with urllib.request.urlopen(sent, timeout=60) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def fhir(api, token, method, path, body=None):
    return request(method, f"{api}/fhir/R4/{path}", token, body, "application/fhir+json")


def total(api, token, kind, query=""):
    status, bundle = fhir(api, token, "GET", f"{kind}?_count=1&_total=accurate{query}")
    assert status == 200, bundle
    return bundle["total"]


def seed(api, token, tag):
    """Three patients, a document for the first, a group of the first two: their ids."""
    patients = []
    for name in ("Ada", "Grace", "Edsger"):
        status, created = fhir(
            api, token, "POST", "Patient",
            {"resourceType": "Patient", "name": [{"text": f"{name} Bulk{tag}"}]},
        )
        assert status == 201, created
        patients.append(created["id"])
    status, document = fhir(
        api, token, "POST", "DocumentReference",
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "subject": {"reference": f"Patient/{patients[0]}"},
            "content": [{"attachment": {"title": "summary.pdf", "contentType": "application/pdf", "size": 10}}],
        },
    )
    assert status == 201, document
    status, group = fhir(
        api, token, "POST", "Group",
        {
            "resourceType": "Group", "type": "person", "actual": True, "name": f"Bulk check {tag}",
            "member": [{"entity": {"reference": f"Patient/{p}"}} for p in patients[:2]],
        },
    )
    assert status == 201, group
    return patients, document["id"], group["id"]


def backend_client(api, token, out):
    """A Backend Services client with an ES384 key: (client id, path of its private JWK Set)."""
    key = jwk.JWK.generate(kty="EC", crv="P-384", kid=f"bulk-{uuid.uuid4().hex[:8]}")
    private = json.loads(key.export_private())
    private.update({"alg": "ES384", "key_ops": ["sign"]})
    public = json.loads(key.export_public())
    public.update({"alg": "ES384", "use": "sig"})
    status, client = request(
        "POST", f"{api}/api/v1/smart-clients/", token,
        {
            "client_name": "smart-fetch bulk check",
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [public]},
            "scope": "system/Patient.rs system/DocumentReference.rs",
        },
    )
    assert status == 201, client
    path = out / "client.jwks"
    path.write_text(json.dumps({"keys": [private]}))
    return client["client_id"], path


def smart_fetch(binary, api, client_id, key, folder, *extra):
    command = [
        binary, "bulk", str(folder), "--fhir-url", f"{api}/fhir/R4",
        "--smart-client-id", client_id, "--smart-key", str(key),
        "--type", ",".join(TYPES), *extra,
    ]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-4000:], sep="\n")
        raise SystemExit(f"FAIL smart-fetch {' '.join(extra) or 'system export'}: exit {done.returncode}")
    return time.monotonic() - started


def read_export(folder):
    """{type: [resource, ...]} of every NDJSON file smart-fetch wrote, each validated."""
    found = {}
    # smart-fetch writes each type's resources as <Type>.<n>.ndjson.gz, and its own log.ndjson.
    for path in sorted(folder.glob("*.ndjson.gz")):
        for number, line in enumerate(gzip.decompress(path.read_bytes()).decode().splitlines(), 1):
            resource = json.loads(line)
            try:
                # Strict models: an unknown element, a wrong type, a missing required one raise.
                FHIRElementFactory.instantiate(resource["resourceType"], resource).as_json()
            except Exception as error:  # fhirclient raises FHIRValidationError and plain errors
                raise SystemExit(f"FAIL {path.name}:{number} is no valid R4 {resource.get('resourceType')}: {error}")
            found.setdefault(resource["resourceType"], []).append(resource)
    return found


def check(step, found, expected):
    got = {kind: sorted(r["id"] for r in found.get(kind, [])) for kind in expected}
    for kind, ids in expected.items():
        want = sorted(ids) if isinstance(ids, list) else ids
        have = got[kind] if isinstance(ids, list) else len(got[kind])
        if have != want:
            raise SystemExit(f"FAIL {step}: {kind} exported {have}, expected {want}")
        if len(set(got[kind])) != len(got[kind]):
            raise SystemExit(f"FAIL {step}: {kind} holds a resource twice")
    lines = sum(len(v) for v in found.values())
    print(f"ok   {step}: {lines} resources, each valid R4 (fhirclient strict)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--api", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--smart-fetch", default=str(pathlib.Path(sys.executable).parent / "smart-fetch"))
    args = parser.parse_args()
    api, token, out = args.api.rstrip("/"), args.token, args.out
    out.mkdir(parents=True, exist_ok=True)

    tag = uuid.uuid4().hex[:8]
    patients, document, group = seed(api, token, tag)
    client_id, key = backend_client(api, token, out)

    seconds = smart_fetch(args.smart_fetch, api, client_id, key, out / "system")
    found = read_export(out / "system")
    check(
        f"system export ({seconds:.1f} s)", found,
        {"Patient": total(api, token, "Patient"), "DocumentReference": total(api, token, "DocumentReference")},
    )

    seconds = smart_fetch(args.smart_fetch, api, client_id, key, out / "group", "--group", group)
    check(
        f"group export ({seconds:.1f} s)", read_export(out / "group"),
        {"Patient": patients[:2], "DocumentReference": [document]},
    )

    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    time.sleep(1.1)
    status, late = fhir(api, token, "POST", "Patient", {"resourceType": "Patient", "name": [{"text": f"Late Bulk{tag}"}]})
    assert status == 201, late
    seconds = smart_fetch(args.smart_fetch, api, client_id, key, out / "since", "--since", since)
    check(f"_since {since} ({seconds:.1f} s)", read_export(out / "since"), {"Patient": [late["id"]], "DocumentReference": []})

    seconds = smart_fetch(
        args.smart_fetch, api, client_id, key, out / "filtered",
        "--type-filter", f"Patient?name=Grace Bulk{tag}", "--type-filter", f"DocumentReference?patient={patients[0]}",
    )
    check(
        f"_typeFilter ({seconds:.1f} s)", read_export(out / "filtered"),
        {"Patient": [patients[1]], "DocumentReference": [document]},
    )
    print("bulk check: smart-fetch exported system, group, _since and _typeFilter as expected")


if __name__ == "__main__":
    main()
