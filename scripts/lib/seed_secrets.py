"""Creates (or updates) the local secrets in the Secrets Manager server, in the formats AWS uses:
the RDS secret JSON for the database, and the application secret for the JWT key and SMTP."""

import argparse
import json
import urllib.parse

import boto3


def put(client, name, value):
    body = json.dumps(value)
    try:
        client.create_secret(Name=name, SecretString=body)
    except client.exceptions.ResourceExistsException:
        client.put_secret_value(SecretId=name, SecretString=body)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--secret-key", required=True)
    parser.add_argument("--app-secret", required=True)
    parser.add_argument("--database-secret", required=True)
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
        "secret_key": args.secret_key,
        "smtp_user": "",
        "smtp_password": "",
    })


if __name__ == "__main__":
    main()
