// Reads a JSON list of layout texts (argv[2]) and prints, for each, what the canvas's validation says: {ok, path}.
// Used by test_layout_schema_agreement.py to compare the JS schema with the Python one on generated texts.
import { readFileSync } from "node:fs";

import { parseLayoutText } from "../../web/js/layout_schema.js";

const texts = JSON.parse(readFileSync(process.argv[2], "utf8"));
const out = texts.map((text) => {
  try {
    parseLayoutText(text);
    return { ok: true, path: null };
  } catch (err) {
    return { ok: false, path: err.path ?? null, detail: err.detail ?? String(err) };
  }
});
process.stdout.write(JSON.stringify(out));
