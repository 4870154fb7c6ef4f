// The page around the rendered notes.
exports.page = (body) => `<h1>notes</h1>\n${body}\n`;
