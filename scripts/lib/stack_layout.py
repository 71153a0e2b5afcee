"""The local stack's layout, in Python rather than bash arithmetic: which port each service of
a run listens on, the settings every script and test reads, the environment the functions
read at cold start, and the wait for a service just started.

    python3 scripts/lib/stack_layout.py env NAME PORT_BASE      -> the stack's settings, as
                                                                    shell assignments to source
    python3 scripts/lib/stack_layout.py functions-env FILE      -> writes the functions' .env
    python3 scripts/lib/stack_layout.py wait-port NAME PORT LOG [--pid PID] [--tries N]

Standard library only: it runs before any venv exists.
"""

import argparse
import os
import shlex
import socket
import sys
import time
from pathlib import Path

# Each service's port, as an offset from the run's base (scripts/dev: 9100, scripts/test:
# 19000, ...), so two runs with different bases never meet.
PORT_OFFSETS = {
    "S3_PORT": 1,  # s3s-fs
    "SECRETS_PORT": 2,  # moto: Secrets Manager and SQS (the export queue)
    "SMTP_PORT": 3,  # the SMTP sink
    "S3_BROWSER_PORT": 4,  # the bucket's CORS rule in front of s3s-fs
    "WATCH_PORT": 7,  # cargo lambda watch, behind the API's CORS rule
    "SAM_API_PORT": 8,  # sam local start-api (scripts/sam-local)
}

# What the functions read at cold start (template.yaml sets the same names in AWS), with the
# local default of those a run may leave unset.
FUNCTION_SETTINGS = {
    "ENVIRONMENT": "local",
    "RUST_LOG": "info",
    "AWS_ACCESS_KEY_ID": None,
    "AWS_SECRET_ACCESS_KEY": None,
    "AWS_REGION": None,
    "AWS_ENDPOINT_URL_SECRETS_MANAGER": None,
    "AWS_ENDPOINT_URL_SQS": None,
    "EXPORT_QUEUE_URL": None,
    "DATABASE_SECRET_ARN": None,
    "DATABASE_TLS": "disable",
    "APP_SECRET_ARN": None,
    "TOKEN_SIGNING_SECRET_ARN": None,
    "TOKEN_PUBLIC_KEYS_SECRET_ARN": None,
    "MFA_KEY_SECRET_ARN": None,
    # Local clients and the replaced system's scripts sign in with a password alone unless a
    # run asks for more (template.yaml's default is superuser).
    "MFA_REQUIRED_ROLES": "none",
    "WEBAUTHN_ORIGIN": None,
    "S3_BUCKET": None,
    "S3_FORCE_PATH_STYLE": "true",
    "SMTP_HOST": None,
    "SMTP_PORT": None,
    "SMTP_TLS": "none",
    "FRONTEND_HOST": None,
    "PASSWORD_RECOVERY_MIN_RESPONSE_MS": "1500",
    "MULTIPART_THRESHOLD_BYTES": "67108864",
}


def stack_env(name: str, base: int, run_dir: str, frontend_host: str) -> dict:
    """Every setting of run `name` whose ports start at `base`."""
    ports = {key: base + offset for key, offset in PORT_OFFSETS.items()}
    if max(ports.values()) > 65535 or base < 1024:
        sys.exit(f"error: port base {base} leaves the range of unprivileged ports")
    local = "http://127.0.0.1"
    return {
        **{key: str(port) for key, port in ports.items()},
        "RUN": run_dir,
        # Where the console is served: the origin the bucket's CORS allows and email links name.
        "FRONTEND_HOST": frontend_host,
        "AWS_ACCESS_KEY_ID": "carevault-local",
        "AWS_SECRET_ACCESS_KEY": "carevault-local-secret",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": f"{local}:{ports['S3_PORT']}",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": f"{local}:{ports['SECRETS_PORT']}",
        "AWS_ENDPOINT_URL_SQS": f"{local}:{ports['SECRETS_PORT']}",
        # moto's account id; scripts/lib/export_queue.py creates the queue and its dead-letter
        # queue, and polls it for the worker as the event source mapping does in AWS.
        "EXPORT_QUEUE_URL": f"{local}:{ports['SECRETS_PORT']}/123456789012/carevault-{name}-exports",
        "S3_BUCKET": "carevault-local",
        "S3_FORCE_PATH_STYLE": "true",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_TLS": "none",
        "SMTP_SINK_DIR": f"{run_dir}/mail",
        "APP_SECRET_ARN": f"carevault/{name}/app",
        "DATABASE_SECRET_ARN": f"carevault/{name}/database",
        "TOKEN_SIGNING_SECRET_ARN": f"carevault/{name}/token-signing",
        "TOKEN_PUBLIC_KEYS_SECRET_ARN": f"carevault/{name}/token-public-keys",
        "MFA_KEY_SECRET_ARN": f"carevault/{name}/mfa-key",
        # Passkeys' origin: browsers refuse WebAuthn on an IP address, so the console's origin
        # named as localhost (the API's CORS allows it too).
        "WEBAUTHN_ORIGIN": os.environ.get("WEBAUTHN_ORIGIN")
        or frontend_host.replace("://127.0.0.1", "://localhost"),
        "DATABASE_TLS": "disable",
        "SAM_CLI_TELEMETRY": "0",
    }


def functions_env(environ: dict) -> str:
    """The functions' settings from the stack's (the presigned URLs name the bucket's CORS
    gateway, the address browsers reach), one KEY=VALUE a line."""
    settings = {}
    for key, default in FUNCTION_SETTINGS.items():
        value = environ.get(key) or default
        if value is None:
            sys.exit(f"error: {key} is not set: source the stack's settings first")
        settings[key] = value
    settings["AWS_ENDPOINT_URL_S3"] = f"http://127.0.0.1:{environ['S3_BROWSER_PORT']}"
    for key, value in settings.items():
        if "\n" in value:
            sys.exit(f"error: {key} holds a line break")
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A child that exited but was not yet reaped is a zombie: gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def tail(log: Path, lines: int = 20) -> None:
    if log.is_file():
        sys.stderr.write("".join(log.read_text(errors="replace").splitlines(True)[-lines:]))


def wait_port(name: str, port: int, log: Path, pid, tries: int) -> None:
    """Until the service just started listens on 127.0.0.1:`port`; fails at once if it died."""
    for _ in range(tries):
        if listening(port):
            return
        if pid is not None and not alive(pid):
            tail(log)
            sys.exit(f"error: {name} exited before listening on 127.0.0.1:{port}")
        time.sleep(0.2)
    tail(log)
    sys.exit(f"error: {name} did not start listening on 127.0.0.1:{port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    env = commands.add_parser("env")
    env.add_argument("name")
    env.add_argument("base", type=int)
    env.add_argument("--run-dir", required=True)
    env.add_argument("--frontend-host", required=True)
    commands.add_parser("functions-env").add_argument("file", type=Path)
    wait = commands.add_parser("wait-port")
    wait.add_argument("name")
    wait.add_argument("port", type=int)
    wait.add_argument("log", type=Path)
    wait.add_argument("--pid", type=int)
    wait.add_argument("--tries", type=int, default=150)
    args = parser.parse_args()

    if args.command == "env":
        settings = stack_env(args.name, args.base, args.run_dir, args.frontend_host)
        for key, value in settings.items():
            print(f"export {key}={shlex.quote(value)}")
    elif args.command == "functions-env":
        args.file.write_text(functions_env(dict(os.environ)), encoding="utf-8")
    elif args.command == "wait-port":
        wait_port(args.name, args.port, args.log, args.pid, args.tries)


if __name__ == "__main__":
    main()
