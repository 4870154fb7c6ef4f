"""api: a tiny HTTP service. lks runs `pip install` when requirements.txt changes."""
import http.server
import os

MESSAGE = "hello from api"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (MESSAGE + "\n").encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        print("api: " + fmt % args, flush=True)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "18081"))
    print(f"api listening on {port}", flush=True)
    bind = os.environ.get("BIND", "127.0.0.1")
    http.server.HTTPServer((bind, port), Handler).serve_forever()
