// web: answers with a greeting and what api says. Edit the greeting and save:
// lks syncs the file and restarts the process.
const http = require("http");

const port = Number(process.env.PORT || 18080);
const apiUrl = process.env.API_URL || "http://127.0.0.1:18081";
const greeting = "hello from web";

function askApi(callback) {
  http
    .get(apiUrl, (res) => {
      let body = "";
      res.on("data", (chunk) => (body += chunk));
      res.on("end", () => callback(body.trim()));
    })
    .on("error", (err) => callback(`api unreachable: ${err.message}`));
}

http
  .createServer((req, res) => {
    if (req.url === "/health") {
      res.writeHead(200, { "content-type": "text/plain" });
      return res.end("ok\n");
    }
    askApi((api) => {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(`${greeting}; api says: ${api}\n`);
    });
  })
  .listen(port, process.env.BIND || "127.0.0.1", () => console.log(`web listening on ${port}`));
