"""Hooks for the schemathesis run in scripts/test (SCHEMATHESIS_HOOKS=schemathesis_hooks).

Request bodies that are not UTF-8 are left out: cargo lambda watch, the local stand-in for API
Gateway, cannot put them into an event and answers its own 500 before any function runs. API
Gateway base64-encodes such a body, and our functions answer it with a 422; the Rust test
`faults::a_body_that_is_not_utf8_is_a_client_error` sends that event through the handlers."""

import schemathesis


@schemathesis.hook("filter_body")
def filter_body(ctx, body):
    if isinstance(body, (bytes, bytearray)):
        try:
            bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True
