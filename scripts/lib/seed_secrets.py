"""Creates (or updates) the local secrets in the Secrets Manager server, in the formats AWS uses:
the RDS secret JSON for the database, the application secret for SMTP, and the two token key
secrets, created empty (`{}`) as the stack creates them: the migrate function generates the key
pair into them, as it does on the first deploy, and an existing key is never overwritten; and
the key that seals TOTP secrets, generated once."""

import argparse
import json
import secrets
import urllib.parse

import boto3


def put(client, name, value):
    body = json.dumps(value)
    try:
        client.create_secret(Name=name, SecretString=body)
    except client.exceptions.ResourceExistsException:
        client.put_secret_value(SecretId=name, SecretString=body)


def create_if_missing(client, name, value):
    try:
        client.create_secret(Name=name, SecretString=json.dumps(value))
    except client.exceptions.ResourceExistsException:
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--app-secret", required=True)
    parser.add_argument("--database-secret", required=True)
    parser.add_argument("--token-signing-secret", required=True)
    parser.add_argument("--token-public-keys-secret", required=True)
    parser.add_argument("--mfa-key-secret", required=True)
    args = parser.parse_args()

    url = urllib.parse.urlsplit(args.database_url)
    client = boto3.client("secretsmanager")
    put(client, args.database_secret, {
        "engine": "postgres",
        "username": urllib.parse.unquote(url.username or "postgres"),
        "password": urllib.parse.unquote(url.password or ""),
        "host": url.hostname or "127.0.0.1",
        "port": url.port or 5432,
        "dbname": url.path.lstrip("/") or "postgres",
    })
    put(client, args.app_secret, {
        "smtp_user": "",
        "smtp_password": "",
    })
    create_if_missing(client, args.token_signing_secret, {})
    create_if_missing(client, args.token_public_keys_secret, {})
    # Generated once, as the stack's GenerateSecretString does: replacing it would leave the
    # sealed TOTP secrets unreadable.
    create_if_missing(client, args.mfa_key_secret, {"kid": "1", "key": secrets.token_urlsafe(48)})


if __name__ == "__main__":
    main()
