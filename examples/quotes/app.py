"""quotes: a random quote from quotes/*.txt in templates/page.html, both read
on every request (editing them needs no restart; editing this file does).
It listens on 127.0.0.1 only: lks forwards its port on every runtime."""

import http.server
import os
import pathlib
import random

HERE = pathlib.Path(__file__).parent
PORT = int(os.environ.get("PORT", "18083"))


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            body = b"ok\n"
        else:
            quotes = [
                line.strip()
                for f in sorted((HERE / "quotes").glob("*.txt"))
                for line in f.read_text().splitlines()
                if line.strip()
            ]
            page = (HERE / "templates" / "page.html").read_text()
            body = page.replace("{quote}", random.choice(quotes)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


print(f"quotes listening on 127.0.0.1:{PORT}", flush=True)
http.server.HTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
