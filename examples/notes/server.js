// notes: serves the notes that notes-build (a host-side build) renders into
// dist/. It listens on 127.0.0.1 only: lks forwards its port from the host on
// every runtime (no 0.0.0.0 needed in a container or a pod).
const http = require("http");
const fs = require("fs");
const path = require("path");
const { page } = require("./lib/render");

const port = Number(process.env.PORT || 18082);
const dist = path.join(__dirname, "dist", "notes.html");

http
  .createServer((req, res) => {
    if (req.url === "/health") return res.end("ok\n");
    // Read on every request: a new dist/ is served without a restart.
    fs.readFile(dist, "utf8", (err, body) => {
      res.setHeader("Content-Type", "text/html");
      res.end(page(err ? "(no notes built yet)" : body));
    });
  })
  .listen(port, "127.0.0.1", () => console.log(`notes listening on 127.0.0.1:${port}`));
