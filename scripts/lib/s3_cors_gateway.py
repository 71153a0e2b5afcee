"""The local bucket's CORS, in front of s3s-fs (which has none): answers browsers' preflight
requests and adds the CORS response headers by the same rule as the bucket in template.yaml
(origin FRONTEND_HOST, methods PUT/GET/HEAD, any request header, ETag exposed), and passes every
request through unchanged otherwise: same method, path, query and headers (Host included, so
presigned signatures still verify), body streamed both ways."""

import argparse
import http.client
import http.server
import socketserver

ALLOWED_METHODS = "PUT, GET, HEAD"
MAX_AGE = "3600"
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


class Gateway(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = ("127.0.0.1", 0)
    allowed_origins = frozenset()

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        # One line per request, without the query string: it holds the presigned signature.
        pass

    def allowed_origin(self):
        origin = self.headers.get("Origin")
        return origin if origin in self.allowed_origins else None

    def do_OPTIONS(self):
        origin = self.allowed_origin()
        method = self.headers.get("Access-Control-Request-Method", "")
        if origin is None or method.upper() not in ALLOWED_METHODS.split(", "):
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
        self.send_response(200)
        self.send_header("Access-Control-Allow-Origin", origin)
        self.send_header("Access-Control-Allow-Methods", ALLOWED_METHODS)
        requested = self.headers.get("Access-Control-Request-Headers")
        if requested:
            self.send_header("Access-Control-Allow-Headers", requested)
        self.send_header("Access-Control-Max-Age", MAX_AGE)
        self.send_header("Vary", "Origin, Access-Control-Request-Headers, Access-Control-Request-Method")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def forward(self):
        body = self.request_body()
        upstream = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    upstream.putheader(name, value)
            if body is not None or self.command in ("PUT", "POST"):
                upstream.putheader("Content-Length", str(self.content_length()))
            upstream.endheaders()
            if body is not None:
                for piece in body:
                    upstream.send(piece)
            response = upstream.getresponse()
            self.relay(response)
        except OSError as error:
            self.send_error(502, f"s3s-fs did not answer: {error}")
        finally:
            upstream.close()

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
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        origin = self.allowed_origin()
        if origin is not None:
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Expose-Headers", "ETag")
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

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--allow-origin", action="append", default=[])
    args = parser.parse_args()
    Gateway.upstream = ("127.0.0.1", args.upstream_port)
    Gateway.allowed_origins = frozenset(o.rstrip("/") for o in args.allow_origin)
    Server(("127.0.0.1", args.port), Gateway).serve_forever()


if __name__ == "__main__":
    main()
