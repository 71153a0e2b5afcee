# shellcheck shell=bash
# The local stack shared by scripts/dev and scripts/test: PostgreSQL, S3 (s3s-fs), Secrets
# Manager (moto) and an SMTP sink. Each piece is started only when missing and stopped on exit
# by the script that started it. Source this file; call stack_up; the EXIT trap cleans up.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="${CAREVAULT_TOOLS:-$HOME/.cache/carevault}"
VENV="$TOOLS/venv"
S3S_VERSION="0.14.1"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

STARTED_PIDS=()
STARTED_PG_DATA=""
stack_down() {
    # A second Ctrl-C must not cut the clean-up short.
    trap '' INT TERM
    local pid
    for pid in "${STARTED_PIDS[@]:-}"; do
        [ -n "$pid" ] || continue
        # Each service runs in its own process group: stop the whole group (cargo lambda watch
        # has children).
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED_PIDS[@]:-}"; do
        [ -n "$pid" ] || continue
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    if [ -n "$STARTED_PG_DATA" ]; then
        say "stopping the throwaway PostgreSQL cluster"
        pg_as_owner "$(pg_bin pg_ctl)" -D "$STARTED_PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
    fi
}

# Starts "$@" in its own process group, logging to $RUN/logs/<name>.log.
start_bg() {
    local name="$1"; shift
    mkdir -p "$RUN/logs"
    setsid "$@" >"$RUN/logs/$name.log" 2>&1 < /dev/null &
    STARTED_PIDS+=("$!")
}

# The stack's requests and URL handling, in Python (scripts/lib/local_api.py; standard library).
local_api() { python3 "$ROOT/scripts/lib/local_api.py" "$@"; }

# The stack's layout (ports, settings, the functions' environment) and the wait for a service,
# in Python (scripts/lib/stack_layout.py; standard library).
stack_layout() { python3 "$ROOT/scripts/lib/stack_layout.py" "$@"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port NAME PORT [TRIES]: until the service just started listens; fails at once if it died.
wait_port() {
    local pid="${STARTED_PIDS[-1]:-}"
    stack_layout wait-port "$1" "$2" "$RUN/logs/$1.log" ${pid:+--pid "$pid"} --tries "${3:-150}" ||
        exit 1
}

# ensure_venv DIR REQUIREMENTS: a venv holding exactly REQUIREMENTS, reinstalled when the file
# changes. Tools that pin their own versions of shared libraries get a venv each.
ensure_venv() {
    local venv="$1" requirements="$2" stamp want
    stamp="$venv/.requirements.sha256"
    want="$(sha256sum "$requirements" | cut -d' ' -f1)"
    if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        say "installing $(basename "$requirements") into $venv"
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
        echo "$want" >"$stamp"
    fi
}

# moto, aiosmtpd, cargo-lambda, aws-sam-cli, cfn-lint.
ensure_python_tools() {
    ensure_venv "$VENV" "$ROOT/scripts/requirements.txt"
    export PATH="$VENV/bin:$PATH"
}

ensure_checkov() {
    ensure_venv "$TOOLS/checkov-venv" "$ROOT/scripts/requirements-checkov.txt"
    CHECKOV="$TOOLS/checkov-venv/bin/checkov"
}

ensure_schemathesis() {
    ensure_venv "$TOOLS/schemathesis-venv" "$ROOT/scripts/requirements-schemathesis.txt"
    SCHEMATHESIS="$TOOLS/schemathesis-venv/bin/st"
}

ensure_s3s_fs() {
    if [ ! -x "$TOOLS/bin/s3s-fs" ] || ! "$TOOLS/bin/s3s-fs" --version 2>/dev/null | grep -q "$S3S_VERSION"; then
        say "installing s3s-fs $S3S_VERSION (local S3 server) into $TOOLS/bin"
        # Versions after 0.14.1 need a newer rustc than this toolchain.
        cargo install s3s-fs --version "$S3S_VERSION" --features binary --locked --root "$TOOLS" --quiet
    fi
}

pg_bin() {
    if command -v "$1" >/dev/null 2>&1; then command -v "$1"; return; fi
    local found
    found="$(ls -d /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -1)"
    [ -n "$found" ] && echo "$found"
}

# PostgreSQL refuses to run as root: as root, run the server as the 'postgres' user.
pg_as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Sets PG_ADMIN_URL (a URL to the server's 'postgres' database).
ensure_postgres() {
    if [ -n "${DATABASE_URL:-}" ]; then
        say "PostgreSQL: using DATABASE_URL"
        PG_ADMIN_URL="$(local_api admin-url "$DATABASE_URL")"
    elif pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || port_open 5432; then
        say "PostgreSQL: using the server on 127.0.0.1:5432"
        PG_ADMIN_URL="postgresql://postgres@127.0.0.1:5432/postgres"
    else
        start_throwaway_postgres
    fi
    psql "$PG_ADMIN_URL" -qAtc 'SELECT 1' >/dev/null || die "PostgreSQL at $PG_ADMIN_URL does not answer"
}

start_throwaway_postgres() {
    local port="${CAREVAULT_PG_PORT:-55432}"
    if [ -z "$(pg_bin initdb)" ]; then
        [ "$(id -u)" = 0 ] || die "no PostgreSQL server runs and initdb is missing: install PostgreSQL or set DATABASE_URL"
        say "installing PostgreSQL from Debian's packages"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    local data="$RUN/pgdata"
    if port_open "$port"; then
        say "PostgreSQL: reusing the throwaway cluster on 127.0.0.1:$port"
    else
        say "PostgreSQL: starting a throwaway cluster on 127.0.0.1:$port"
        rm -rf "$data"; mkdir -p "$data"
        [ "$(id -u)" = 0 ] && chown postgres "$data" "$RUN"
        pg_as_owner "$(pg_bin initdb)" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
        pg_as_owner "$(pg_bin pg_ctl)" -D "$data" -l "$data/server.log" -w \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c fsync=off" start >/dev/null
        STARTED_PG_DATA="$data"
    fi
    PG_ADMIN_URL="postgresql://postgres@127.0.0.1:$port/postgres"
}

ensure_database() {
    local name="$1"
    if ! psql "$PG_ADMIN_URL" -qAtc "SELECT 1 FROM pg_database WHERE datname = '$name'" | grep -q 1; then
        say "creating database $name"
        psql "$PG_ADMIN_URL" -qc "CREATE DATABASE \"$name\"" >/dev/null
    fi
}

ensure_s3() {
    if port_open "$S3_PORT"; then
        say "S3: reusing the server on 127.0.0.1:$S3_PORT"
    else
        say "S3: starting s3s-fs on 127.0.0.1:$S3_PORT (data in $RUN/s3)"
        mkdir -p "$RUN/s3"
        start_bg s3s-fs "$TOOLS/bin/s3s-fs" --host 127.0.0.1 --port "$S3_PORT" \
            --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" "$RUN/s3"
        wait_port s3s-fs "$S3_PORT"
    fi
    # s3s-fs keeps one folder per bucket.
    mkdir -p "$RUN/s3/$S3_BUCKET"
    # What browsers reach: the bucket's CORS rule (as in template.yaml) in front of s3s-fs.
    if port_open "$S3_BROWSER_PORT"; then
        say "S3 for browsers: reusing the CORS gateway on 127.0.0.1:$S3_BROWSER_PORT"
    else
        say "S3 for browsers: the bucket's CORS (origin $FRONTEND_HOST) on 127.0.0.1:$S3_BROWSER_PORT"
        start_bg s3-cors "$VENV/bin/python" "$ROOT/scripts/lib/cors_gateway.py" --rule bucket \
            --port "$S3_BROWSER_PORT" --upstream-port "$S3_PORT" --allow-origin "$FRONTEND_HOST"
        wait_port s3-cors "$S3_BROWSER_PORT"
    fi
}

ensure_secrets_manager() {
    if port_open "$SECRETS_PORT"; then
        say "Secrets Manager: reusing the server on 127.0.0.1:$SECRETS_PORT"
    else
        say "Secrets Manager: starting moto on 127.0.0.1:$SECRETS_PORT"
        start_bg moto "$VENV/bin/moto_server" -H 127.0.0.1 -p "$SECRETS_PORT"
        wait_port moto "$SECRETS_PORT"
    fi
    # The same secrets a deployment has, in the same JSON formats; the token key secrets start
    # empty, as the stack creates them, and the migrate function fills them.
    "$VENV/bin/python" "$ROOT/scripts/lib/seed_secrets.py" \
        --database-url "$DATABASE_URL" \
        --app-secret "$APP_SECRET_ARN" --database-secret "$DATABASE_SECRET_ARN" \
        --token-signing-secret "$TOKEN_SIGNING_SECRET_ARN" \
        --token-public-keys-secret "$TOKEN_PUBLIC_KEYS_SECRET_ARN" \
        --mfa-key-secret "$MFA_KEY_SECRET_ARN"
    # The same moto serves SQS: the bulk export queue and its dead-letter queue.
    "$VENV/bin/python" "$ROOT/scripts/lib/export_queue.py" create --queue-url "$EXPORT_QUEUE_URL"
}

ensure_smtp_sink() {
    if port_open "$SMTP_PORT"; then
        say "SMTP: reusing the sink on 127.0.0.1:$SMTP_PORT"
    else
        say "SMTP: starting the sink on 127.0.0.1:$SMTP_PORT (mail saved in $SMTP_SINK_DIR)"
        mkdir -p "$SMTP_SINK_DIR"
        start_bg smtp-sink "$VENV/bin/python" "$ROOT/scripts/lib/smtp_sink.py" \
            --port "$SMTP_PORT" --dir "$SMTP_SINK_DIR"
        wait_port smtp-sink "$SMTP_PORT"
    fi
}

# start_api PORT: every function behind one address, as API Gateway serves them (cargo lambda
# watch, which builds a function on its first request), reading its settings as in AWS, behind
# the HTTP API's CORS rule (watch's own would grant any origin).
start_api() {
    local port="$1"
    # What each function reads at cold start: secrets from the local Secrets Manager, as in AWS.
    local env_file="$RUN/functions.env"
    stack_layout functions-env "$env_file"
    # Every function built before the first request: cargo lambda watch compiles a function on
    # its first invocation, and a first request that waits on a compile times out (500).
    # API_PROFILE=release builds and runs them as deployed (LTO, unwinding panics).
    local release=()
    [ "${API_PROFILE:-dev}" = release ] && release=(--release)
    say "building every function (${API_PROFILE:-dev} profile, as cargo lambda watch runs them)"
    cargo build --quiet --workspace --bins "${release[@]}"
    say "cargo lambda watch on 127.0.0.1:$WATCH_PORT, behind the API's CORS rule on http://127.0.0.1:$port"
    start_bg watch cargo lambda watch --invoke-address 127.0.0.1 --invoke-port "$WATCH_PORT" \
        --disable-cors --env-file "$env_file" "${release[@]}"
    wait_port watch "$WATCH_PORT" 600
    # The console's origin, and those of SMART apps that run in a browser (SMART_APP_ORIGINS,
    # commas), as template.yaml's SmartAppOrigins adds them.
    local origins=(--allow-origin "$FRONTEND_HOST") extra origin
    # The console named as localhost, where browsers allow passkeys.
    [ -n "${WEBAUTHN_ORIGIN:-}" ] && [ "$WEBAUTHN_ORIGIN" != "$FRONTEND_HOST" ] &&
        origins+=(--allow-origin "$WEBAUTHN_ORIGIN")
    IFS=, read -ra extra <<<"${SMART_APP_ORIGINS:-}"
    for origin in "${extra[@]}"; do
        [ -n "$origin" ] && origins+=(--allow-origin "$origin")
    done
    start_bg api-cors "$VENV/bin/python" "$ROOT/scripts/lib/cors_gateway.py" --rule api \
        --port "$port" --upstream-port "$WATCH_PORT" "${origins[@]}"
    wait_port api-cors "$port"
    # The export queue's event source mapping: the worker invoked with SQS's own events.
    say "export queue: invoking bulk-export for each message, as the event source mapping does"
    start_bg export-queue "$VENV/bin/python" "$ROOT/scripts/lib/export_queue.py" poll \
        --queue-url "$EXPORT_QUEUE_URL" \
        --invoke-url "http://127.0.0.1:$WATCH_PORT/2015-03-31/functions/bulk-export/invocations"
}

# Debian's Chromium for the browser tests (Playwright's own browser downloads do not work here).
ensure_chromium() {
    CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
    if [ ! -x "$CHROMIUM_PATH" ]; then
        [ "$(id -u)" = 0 ] || die "Chromium is missing: install Debian's chromium package, or set CHROMIUM_PATH"
        say "installing Chromium from Debian's packages"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    fi
    export CHROMIUM_PATH
}

# The browser build of SMART's own JavaScript client (npm fhirclient, pinned), for the browser
# tests' SMART apps: its tarball only (npm checks its integrity), none of its Node dependencies.
FHIRCLIENT_VERSION=2.6.3
ensure_fhirclient_bundle() {
    local dir="$TOOLS/fhirclient-$FHIRCLIENT_VERSION"
    if [ ! -f "$dir/package/build/fhir-client.min.js" ]; then
        say "downloading fhirclient $FHIRCLIENT_VERSION (its browser build)"
        mkdir -p "$dir"
        (cd "$dir" && npm pack "fhirclient@$FHIRCLIENT_VERSION" --silent >/dev/null &&
            tar xzf "fhirclient-$FHIRCLIENT_VERSION.tgz")
    fi
    export FHIRCLIENT_JS="$dir/package/build/fhir-client.min.js"
}

ensure_console_packages() {
    # npm ci only when package-lock.json changed since the last install.
    local stamp="$ROOT/web/node_modules/.package-lock.sha256" want
    want="$(sha256sum "$ROOT/web/package-lock.json" | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        say "installing the console's npm packages"
        (cd "$ROOT/web" && npm ci --no-audit --no-fund --loglevel=error)
        echo "$want" >"$stamp"
    fi
    (cd "$ROOT/web" && npx openapi-typescript ../docs/openapi.json -o src/api/schema.d.ts >/dev/null)
}

# start_console dev|preview PORT API_PORT: the web console on 127.0.0.1:PORT, passing /api to the
# API on API_PORT (one origin, as CloudFront and API Gateway are to the browser). dev: Vite's
# dev server (reloads on change); preview: the production build, as deployed.
start_console() {
    local mode="$1" port="$2" api_port="$3"
    ensure_console_packages
    export CAREVAULT_API_PROXY="http://127.0.0.1:$api_port"
    if [ "$mode" = preview ]; then
        say "building the console"
        # The production build's CSP meta tag lets the page reach only itself and the bucket.
        (cd "$ROOT/web" && CONSOLE_CONNECT_SRC="http://127.0.0.1:$S3_BROWSER_PORT" npx vite build --logLevel warn)
        start_bg console bash -c "cd '$ROOT/web' && exec npx vite preview --host 127.0.0.1 --port $port --strictPort"
    else
        start_bg console bash -c "cd '$ROOT/web' && exec npx vite --host 127.0.0.1 --port $port --strictPort"
    fi
    wait_port console "$port" 300
    say "web console on http://127.0.0.1:$port"
}

# stack_up NAME PORT_BASE: the whole stack for a run named NAME (dev, test), its ports from
# PORT_BASE (the layout is scripts/lib/stack_layout.py's).
stack_up() {
    local name="$1" base="$2" settings
    RUN="$ROOT/target/stack/$name"
    mkdir -p "$RUN"
    trap stack_down EXIT
    trap 'exit 130' INT TERM

    settings="$(stack_layout env "$name" "$base" --run-dir "$RUN" \
        --frontend-host "${FRONTEND_HOST:-http://127.0.0.1:5173}")"
    # Assignments quoted by Python's shlex.quote.
    eval "$settings"

    ensure_python_tools
    ensure_s3s_fs
    ensure_postgres
    ensure_s3
    ensure_smtp_sink
}
