"""A tiny HTTP service; lks runs `pip install` when requirements.txt changes."""
import http.server
import os


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.end_headers()
        self.wfile.write(b"hello from python\n")


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8081"))
    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
