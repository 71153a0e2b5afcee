"""SMART Backend Services against the running API, with a JWT library we did not write: PyJWT
signs each client assertion (RS384 and ES384 keys from the `cryptography` package), registered
inline (`jwks`) and at a `jwks_uri` this script serves on loopback. For each of the four: a
token by client_credentials, a FHIR search with it, a replayed assertion refused, revocation.

Usage: backend_services.py --api URL --token SUPERUSER_TOKEN"""

import argparse
import http.server
import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "lib"))
from local_api import api_json  # noqa: E402

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def form_post(url: str, fields: dict, token: str = ""):
    """POSTs a form; (status, JSON answer)."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        url, data=urllib.parse.urlencode(fields).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def get(url: str, token: str):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


class JwksServer:
    """Serves JWK Sets on 127.0.0.1 at /<name>.json."""

    def __init__(self):
        self.sets = {}
        sets = self.sets

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = sets.get(self.path.strip("/").removesuffix(".json"))
                if body is None:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}.json"


def public_jwk(private_key, alg: str, kid: str) -> dict:
    algorithm = jwt.algorithms.RSAAlgorithm if alg.startswith("RS") else jwt.algorithms.ECAlgorithm
    jwk = json.loads(algorithm.to_jwk(private_key.public_key()))
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    return jwk


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    with urllib.request.urlopen(f"{args.api}/fhir/R4/.well-known/smart-configuration") as r:
        discovery = json.loads(r.read())
    token_endpoint = discovery["token_endpoint"]
    fhir_base = discovery["issuer"]
    served = JwksServer()
    checks = 0
    for alg, key in [
        ("RS384", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES384", ec.generate_private_key(ec.SECP384R1())),
    ]:
        for where in ["jwks", "jwks_uri"]:
            kid = f"{alg.lower()}-{uuid.uuid4().hex[:8]}"
            jwks = {"keys": [public_jwk(key, alg, kid)]}
            registration = {
                "client_name": f"pyjwt {alg} {where}",
                "grant_types": ["client_credentials"],
                "token_endpoint_auth_method": "private_key_jwt",
                "scope": "system/Patient.rs system/DocumentReference.rs",
            }
            if where == "jwks":
                registration["jwks"] = jwks
            else:
                served.sets[kid] = jwks
                registration["jwks_uri"] = served.url(kid)
            client = api_json(args.api, args.token, "POST", "/api/v1/smart-clients/", registration)
            client_id = client["client_id"]

            def assertion() -> str:
                now = int(time.time())
                claims = {
                    "iss": client_id,
                    "sub": client_id,
                    "aud": token_endpoint,
                    "exp": now + 240,
                    "iat": now,
                    "jti": str(uuid.uuid4()),
                }
                return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})

            signed = assertion()
            fields = {
                "grant_type": "client_credentials",
                "scope": "system/Patient.rs",
                "client_assertion_type": JWT_BEARER,
                "client_assertion": signed,
            }
            status, answer = form_post(token_endpoint, fields)
            label = f"{alg} with {where}"
            if status != 200 or answer.get("scope") != "system/Patient.rs":
                sys.exit(f"{label}: the token request answered {status} {answer}")
            if not 0 < answer["expires_in"] <= 300 or "refresh_token" in answer:
                sys.exit(f"{label}: not a short-lived system token: {answer}")
            access = answer["access_token"]
            status, bundle = get(f"{fhir_base}/Patient?_count=1", access)
            if status != 200 or bundle.get("resourceType") != "Bundle":
                sys.exit(f"{label}: the FHIR search answered {status}")
            status, refused = form_post(token_endpoint, fields)
            if status != 401 or refused != {"error": "invalid_client"}:
                sys.exit(f"{label}: a replayed assertion answered {status} {refused}")
            status, _ = form_post(
                discovery["revocation_endpoint"],
                {"token": access, "client_assertion_type": JWT_BEARER, "client_assertion": assertion()},
            )
            if status != 200:
                sys.exit(f"{label}: revocation answered {status}")
            status, _ = get(f"{fhir_base}/Patient?_count=1", access)
            if status != 401:
                sys.exit(f"{label}: a revoked token still answered {status}")
            api_json(args.api, args.token, "DELETE", f"/api/v1/smart-clients/{client_id}")
            checks += 1
            print(f"backend services, {label}: token, FHIR search, replay refused, revoked")
    print(f"SMART Backend Services with PyJWT: {checks}/4 clients passed")


if __name__ == "__main__":
    main()
