// Drives the local API with a client generated from docs/openapi.json (openapi-typescript types
// + openapi-fetch): log in, create a patient, find it, attach a file, upload it to the presigned
// URL with the returned headers, download it and compare the bytes; then a multipart upload.
import { createHash } from "node:crypto";
import createClient from "openapi-fetch";
import type { paths } from "./schema.js";

const baseUrl = process.env.API_URL ?? "http://127.0.0.1:9000";
const email = process.env.FIRST_SUPERUSER ?? "admin@example.com";
const password = process.env.FIRST_SUPERUSER_PASSWORD ?? "changethis";

function fail(message: string): never {
  console.error(`client check failed: ${message}`);
  process.exit(1);
}

const anonymous = createClient<paths>({ baseUrl });
const login = await anonymous.POST("/api/v1/login/access-token", {
  body: { username: email, password },
  bodySerializer: (body) => new URLSearchParams(body as Record<string, string>).toString(),
  headers: { "Content-Type": "application/x-www-form-urlencoded" },
});
if (!login.data) fail(`login: ${login.response.status} ${JSON.stringify(login.error)}`);
const api = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${login.data.access_token}` } });

const name = `Client Check ${Date.now()}`;
const created = await api.POST("/api/v1/patients/", {
  body: { name, dob: "1990-04-05", medical_history: "Seasonal asthma." },
});
if (!created.data) fail(`create patient: ${created.response.status}`);
const patient = created.data;

const found = await api.GET("/api/v1/patients/", { params: { query: { name_text: name.toLowerCase(), history_text: "asthma" } } });
if (!found.data?.data.some((p) => p.id === patient.id)) fail("search did not find the new patient");

const bytes = new TextEncoder().encode(`hello from the generated client ${Date.now()}\n`);
const attachment = await api.POST("/api/v1/attachments/", {
  body: { patient_id: patient.id, file_name: "client-check.txt", mime_type: "text/plain", size: bytes.length },
});
if (!attachment.data) fail(`create attachment: ${attachment.response.status}`);
const { upload, id } = attachment.data;
if (upload.type !== "single") fail(`a ${bytes.length}-byte file planned as ${upload.type}`);
// fetch sets Content-Length itself.
const withoutLength = (headers: Record<string, string>) =>
  Object.fromEntries(Object.entries(headers).filter(([k]) => k.toLowerCase() !== "content-length"));
const put = await fetch(upload.url, { method: upload.method, headers: withoutLength(upload.headers), body: bytes });
if (!put.ok) fail(`upload: ${put.status} ${await put.text()}`);

const content = await api.GET("/api/v1/attachments/{attachment_id}/content", {
  params: { path: { attachment_id: id } },
  redirect: "manual",
  parseAs: "text",
});
const location = content.response.headers.get("location");
if (content.response.status !== 302 || !location) fail(`content: ${content.response.status}`);
const download = await fetch(location);
const downloaded = new Uint8Array(await download.arrayBuffer());
if (downloaded.length !== bytes.length || downloaded.some((b, i) => b !== bytes[i])) fail("downloaded bytes differ");

const read = await api.GET("/api/v1/attachments/{attachment_id}", { params: { path: { attachment_id: id } } });
if (read.data?.status !== "uploaded" || read.data.size !== bytes.length) fail(`attachment not confirmed: ${JSON.stringify(read.data)}`);

// The multipart path a script takes for a sequencer's output: plan, part URLs, parts, complete.
const sha256 = (data: Uint8Array) => createHash("sha256").update(data).digest();
const large = await api.POST("/api/v1/attachments/", {
  body: { patient_id: patient.id, file_name: "client-check.bam", size: bytes.length, upload: "multipart" },
});
if (large.data?.upload.type !== "multipart") fail(`create multipart: ${large.response.status}`);
const parts = await api.POST("/api/v1/attachments/{attachment_id}/upload-parts", {
  params: { path: { attachment_id: large.data.id } },
  body: { part_numbers: [1], sha256: [sha256(bytes).toString("base64")] },
});
if (!parts.data) fail(`part URLs: ${parts.response.status}`);
const part = parts.data.parts[0];
const sent = await fetch(part.url, { method: part.method, headers: withoutLength(part.headers), body: bytes });
if (!sent.ok) fail(`part: ${sent.status} ${await sent.text()}`);
const completed = await api.POST("/api/v1/attachments/{attachment_id}/complete", { params: { path: { attachment_id: large.data.id } } });
const composite = `${sha256(sha256(bytes)).toString("base64")}-1`;
if (completed.data?.checksum_sha256 !== composite) fail(`complete: ${JSON.stringify(completed.data)}`);

console.log("client check: 7 passed, 0 failed");
