// notes-build: renders src/*.md into dist/notes.html (one <p> per line).
const fs = require("fs");
const path = require("path");

const src = path.join(__dirname, "src");
const out = path.join(__dirname, "dist");
const html = fs
  .readdirSync(src)
  .filter((f) => f.endsWith(".md"))
  .sort()
  .flatMap((f) => fs.readFileSync(path.join(src, f), "utf8").split("\n"))
  .filter((l) => l.trim() !== "")
  .map((l) => `<p>${l.replace(/^#+\s*/, "")}</p>`)
  .join("\n");
fs.mkdirSync(out, { recursive: true });
fs.writeFileSync(path.join(out, "notes.html.tmp"), html + "\n");
fs.renameSync(path.join(out, "notes.html.tmp"), path.join(out, "notes.html"));
console.log(`built dist/notes.html from ${src}`);
