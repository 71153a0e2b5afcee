"""A CORS rule of template.yaml in front of a local server that has none (s3s-fs) or whose own
rule is too loose (`cargo lambda watch` grants any origin, with credentials): answers browsers'
preflight requests and adds the CORS response headers by the template's rule, drops any CORS
header the server itself sends, and passes every request through unchanged otherwise: same
method, path, query and headers (Host included, so presigned signatures still verify), body
streamed both ways.

The bucket's rule: origin FRONTEND_HOST, methods PUT/GET/HEAD, any request header, ETag exposed,
a refused preflight is S3's 403. The HTTP API's rule: origin FRONTEND_HOST, its methods, the
headers authorization, content-type, if-match and prefer, ETag, Location, Content-Location,
X-Progress, Retry-After and Expires exposed; API Gateway answers a refused preflight without any
CORS header."""

import argparse
import http.client
import http.server
import select
import socket
import socketserver

# Hop-by-hop headers are the gateway's own business on each side.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
CHUNK = 64 * 1024


def no_delay(sock):
    # Each answer goes out as soon as it is written: with Nagle's algorithm, a response written
    # as headers then body waits for the client's delayed ACK (about 40 ms on a kept-alive
    # connection).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Gateway(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = ("127.0.0.1", 0)
    allowed_origins = frozenset()
    allowed_methods = ("PUT", "GET", "HEAD")
    # None: any header a preflight asks for.
    allowed_headers = None
    exposed_headers = "ETag"
    max_age = "3600"
    # The answer to a preflight the rule refuses: "s3" (403 with S3's XML), or "api" (API
    # Gateway's 204 without any CORS header).
    refusal = "s3"

    def setup(self):
        super().setup()
        no_delay(self.connection)

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        # One line per request, without the query string: it holds the presigned signature.
        pass

    def allowed_origin(self):
        origin = self.headers.get("Origin")
        return origin if origin in self.allowed_origins else None

    def do_OPTIONS(self):
        # Not a preflight: the server behind answers it like any other method.
        if "Access-Control-Request-Method" not in self.headers:
            return self.forward()
        # A body on a preflight is read and dropped: left in the stream, it would be taken for
        # the start of the connection's next request.
        for _ in self.request_body() or ():
            pass
        origin = self.allowed_origin()
        method = self.headers.get("Access-Control-Request-Method", "")
        requested = self.headers.get("Access-Control-Request-Headers")
        headers_ok = self.allowed_headers is None or all(
            h.strip().lower() in self.allowed_headers for h in (requested or "").split(",") if h.strip()
        )
        if origin is None or method.upper() not in self.allowed_methods or not headers_ok:
            if self.refusal == "api":
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = (
                b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessForbidden</Code>'
                b"<Message>CORSResponse: This CORS request is not allowed.</Message></Error>"
            )
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200 if self.refusal == "s3" else 204)
        self.send_header("Access-Control-Allow-Origin", origin)
        self.send_header("Access-Control-Allow-Methods", ", ".join(self.allowed_methods))
        if requested:
            self.send_header("Access-Control-Allow-Headers", requested)
        self.send_header("Access-Control-Max-Age", self.max_age)
        self.send_header("Vary", "Origin, Access-Control-Request-Headers, Access-Control-Request-Method")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def forward(self):
        body = self.request_body()
        upstream = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            upstream.connect()
            no_delay(upstream.sock)
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                # Expect: 100-continue was answered to the client by http.server; sent on, the
                # server's own 100 would read as an early answer and cut the body short.
                if name.lower() not in HOP_BY_HOP and name.lower() not in ("content-length", "expect"):
                    upstream.putheader(name, value)
            if body is not None or self.command in ("PUT", "POST"):
                upstream.putheader("Content-Length", str(self.content_length()))
            upstream.endheaders()
            if body is not None and not self.send_body(upstream, body):
                # The server answered before reading the whole body (a refused signature, an
                # upload that is gone): the rest of the client's body is read and dropped, so
                # the client reads that answer as it would S3's instead of a broken pipe.
                for _ in body:
                    pass
            response = upstream.getresponse()
            self.relay(response)
        except OSError as error:
            self.send_error(502, f"the server behind the gateway did not answer: {error}")
        finally:
            upstream.close()

    @staticmethod
    def send_body(upstream, body):
        """Sends the body on; False when the server answered (or stopped reading) first."""
        for piece in body:
            readable, _, _ = select.select([upstream.sock], [], [], 0)
            if readable:
                return False
            try:
                upstream.sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                return False
        return True

    def content_length(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return len(self._dechunked)
        return int(self.headers.get("Content-Length") or 0)

    def request_body(self):
        """The request body as pieces to send on, read as they are sent (None when empty)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._dechunked = self.read_chunked()
            return [self._dechunked]
        length = int(self.headers.get("Content-Length") or 0)
        if length == 0:
            return None

        def pieces():
            left = length
            while left > 0:
                piece = self.rfile.read(min(CHUNK, left))
                if not piece:
                    raise OSError("the client closed the connection mid-body")
                left -= len(piece)
                yield piece

        return pieces()

    def read_chunked(self):
        data = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(data)
            data += self.rfile.read(size)
            self.rfile.readline()

    def relay(self, response):
        self.send_response_only(response.status, response.reason)
        length = response.getheader("Content-Length")
        for name, value in response.getheaders():
            lower = name.lower()
            if lower in HOP_BY_HOP or lower == "content-length" or lower.startswith("access-control-"):
                continue
            self.send_header(name, value)
        origin = self.allowed_origin()
        if origin is not None:
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Expose-Headers", self.exposed_headers)
            self.send_header("Vary", "Origin")
        if self.command == "HEAD" or response.status in (204, 304):
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            return
        if length is not None:
            self.send_header("Content-Length", length)
            self.end_headers()
            while piece := response.read(CHUNK):
                self.wfile.write(piece)
        else:
            payload = response.read()
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_HEAD = forward

    def __getattr__(self, name):
        # Any other method (TRACE, CONNECT, made-up ones) goes to the server behind, which
        # answers it as API Gateway's would (405), rather than http.server's 501.
        if name.startswith("do_"):
            return self.forward
        raise AttributeError(name)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--allow-origin", action="append", default=[])
    parser.add_argument("--rule", choices=["bucket", "api"], default="bucket")
    args = parser.parse_args()
    Gateway.upstream = ("127.0.0.1", args.upstream_port)
    Gateway.allowed_origins = frozenset(o.rstrip("/") for o in args.allow_origin)
    if args.rule == "api":
        # template.yaml, HttpApi CorsConfiguration.
        Gateway.allowed_methods = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
        Gateway.allowed_headers = frozenset({"authorization", "content-type", "if-match", "prefer"})
        Gateway.exposed_headers = "etag, location, content-location, x-progress, retry-after, expires"
        Gateway.max_age = "600"
        Gateway.refusal = "api"
    Server(("127.0.0.1", args.port), Gateway).serve_forever()


if __name__ == "__main__":
    main()
