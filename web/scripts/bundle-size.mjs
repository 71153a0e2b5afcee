// The production build's size as browsers download it: every JavaScript and CSS file in dist/,
// raw and gzipped (zlib level 9, as CloudFront's compression is close to). Fails when the
// JavaScript is over the budget (300 KB gzipped).
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { gzipSync } from "node:zlib";

const BUDGET_KB = 300;
const dist = path.resolve(import.meta.dirname, "../dist/assets");
const kb = (bytes) => (bytes / 1024).toFixed(1);
const totals = { js: { raw: 0, gzip: 0 }, css: { raw: 0, gzip: 0 } };

for (const name of readdirSync(dist).sort()) {
  const kind = path.extname(name).slice(1);
  if (!(kind in totals)) continue;
  const bytes = readFileSync(path.join(dist, name));
  const gzip = gzipSync(bytes, { level: 9 }).length;
  totals[kind].raw += bytes.length;
  totals[kind].gzip += gzip;
  console.log(`${name.padEnd(36)} ${kb(bytes.length).padStart(8)} KB raw ${kb(gzip).padStart(8)} KB gzipped`);
}
console.log(`JavaScript total: ${kb(totals.js.raw)} KB raw, ${kb(totals.js.gzip)} KB gzipped (budget ${BUDGET_KB} KB gzipped)`);
console.log(`CSS total:        ${kb(totals.css.raw)} KB raw, ${kb(totals.css.gzip)} KB gzipped`);
if (totals.js.gzip > BUDGET_KB * 1024) {
  console.error(`the console's JavaScript is over budget: ${kb(totals.js.gzip)} KB > ${BUDGET_KB} KB gzipped`);
  process.exit(1);
}
