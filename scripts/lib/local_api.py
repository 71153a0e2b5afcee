"""What scripts/dev and scripts/test ask of the local stack beyond starting it, in Python
rather than bash: database names from URLs, and the API calls of the test stages (a sign-in,
a user), with JSON built by json.dumps, never by string interpolation.

    python3 scripts/lib/local_api.py database-name URL
    python3 scripts/lib/local_api.py admin-url URL
    python3 scripts/lib/local_api.py port URL                             -> its port (5432 if none)
    python3 scripts/lib/local_api.py login API_URL EMAIL PASSWORD         -> the access token
    python3 scripts/lib/local_api.py create-user API_URL TOKEN EMAIL [--role R] [--superuser]
                                                                          -> the new user's password
    python3 scripts/lib/local_api.py har-entries FILE                     -> how many requests

Standard library only: it runs before any venv exists.
"""

import argparse
import base64
import hashlib
import json
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request


def database_name(url: str) -> str:
    name = urllib.parse.urlsplit(url).path.lstrip("/")
    if not name:
        sys.exit(f"error: {url!r} names no database")
    return name


def admin_url(url: str) -> str:
    """The same server's `postgres` database, where databases are created."""
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(path="/postgres"))


def call(request: urllib.request.Request):
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read()
            return json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        sys.exit(f"error: {request.get_method()} {request.full_url}: {error.code} {error.read()[:500]!r}")
    except (urllib.error.URLError, TimeoutError) as error:
        sys.exit(f"error: {request.get_method()} {request.full_url}: {error}")


def api_json(api: str, token: str, method: str, path: str, body=None):
    """`method path` on the API with a bearer token and a JSON body; its JSON answer (None
    when empty). Exits naming the request on an error status."""
    request = urllib.request.Request(
        f"{api}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method=method,
    )
    return call(request)


def sha256_base64(data: bytes) -> str:
    """A SHA-256 digest as the API takes it (and S3's checksum headers carry it): base64."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def login(api: str, email: str, password: str) -> str:
    form = urllib.parse.urlencode({"username": email, "password": password}).encode()
    request = urllib.request.Request(
        f"{api}/api/v1/login/access-token",
        data=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    return call(request)["access_token"]


def create_user(api: str, token: str, email: str, role, superuser: bool) -> str:
    # Never a leading "-": passed on a command line, it would read as an option (a CI run's
    # login failed so, 1 time in 64).
    password = "p" + secrets.token_urlsafe(18)
    body: dict = {"email": email, "password": password}
    if role:
        body["role"] = role
    if superuser:
        body["is_superuser"] = True
    api_json(api, token, "POST", "/api/v1/users/", body)
    return password


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("database-name").add_argument("url")
    commands.add_parser("admin-url").add_argument("url")
    commands.add_parser("port").add_argument("url")
    sign_in = commands.add_parser("login")
    for name in ("api", "email", "password"):
        sign_in.add_argument(name)
    user = commands.add_parser("create-user")
    for name in ("api", "token", "email"):
        user.add_argument(name)
    user.add_argument("--role")
    user.add_argument("--superuser", action="store_true")
    commands.add_parser("har-entries").add_argument("file")
    args = parser.parse_args()

    if args.command == "database-name":
        print(database_name(args.url))
    elif args.command == "admin-url":
        print(admin_url(args.url))
    elif args.command == "port":
        print(urllib.parse.urlsplit(args.url).port or 5432)
    elif args.command == "login":
        print(login(args.api, args.email, args.password))
    elif args.command == "create-user":
        print(create_user(args.api, args.token, args.email, args.role, args.superuser))
    elif args.command == "har-entries":
        with open(args.file, encoding="utf-8") as har:
            print(len(json.load(har)["log"]["entries"]))


if __name__ == "__main__":
    main()
