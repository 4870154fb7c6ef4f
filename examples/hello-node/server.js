// A tiny HTTP service; edit the message and lks restarts it in the container.
const http = require("http");
const port = process.env.PORT || 8080;
http
  .createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("hello from node\n");
  })
  .listen(port, () => console.log(`listening on ${port}`));
