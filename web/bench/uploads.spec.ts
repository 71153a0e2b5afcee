// Throughput of a 1 GiB upload through the console's own code path (Chromium, the production
// build, the local S3 server behind the bucket's CORS gateway): multipart with 1, 4 and 8 parts
// in flight, or one presigned PUT when the API's threshold is above 1 GiB (UPLOAD_BENCH=single).
// Prints one `UPLOAD_BENCH {...}` line per run for scripts/bench.
import { randomBytes } from "node:crypto";
import { mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect, test } from "@playwright/test";
import { admin, logIn } from "../tests/support";

const SIZE = 1024 * 1024 * 1024;
const RUNS = Number(process.env.UPLOAD_BENCH_RUNS ?? 3);
const modes = process.env.UPLOAD_BENCH === "single" ? ["single"] : ["1", "4", "8"];

test("1 GiB through the console", async ({ page, request }) => {
  const dir = await mkdtemp(path.join(tmpdir(), "carevault-bench-"));
  const file = path.join(dir, "bench-1gib.bam");
  const handle = await open(file, "w");
  for (let written = 0; written < SIZE; written += 64 * 1024 * 1024) await handle.write(randomBytes(64 * 1024 * 1024));
  await handle.close();

  const login = await request.post("/api/v1/login/access-token", { form: { username: admin.email, password: admin.password } });
  const token = (await login.json()).access_token as string;
  const patient = await request.post("/api/v1/patients/", { headers: { Authorization: `Bearer ${token}` }, data: { name: "Upload Bench" } });
  const patientId = (await patient.json()).id as string;

  await page.goto(`/patients/${patientId}`);
  await logIn(page, admin.email, admin.password);
  await expect(page.getByRole("heading", { name: "Upload Bench" })).toBeVisible();
  for (const mode of modes) {
    if (mode !== "single") await page.getByLabel("Parts in flight").selectOption(mode);
    for (let run = 1; run <= RUNS; run += 1) {
      const chooser = page.waitForEvent("filechooser");
      await page.getByRole("button", { name: "Choose files…" }).click();
      const started = Date.now();
      await (await chooser).setFiles(file);
      const uploads = page.getByRole("list", { name: "Uploads" });
      await expect(uploads.getByText("Uploaded", { exact: true })).toBeVisible({ timeout: 1_800_000 });
      const seconds = (Date.now() - started) / 1000;
      console.log(`UPLOAD_BENCH ${JSON.stringify({ mode, run, seconds, mib_per_s: SIZE / 1024 / 1024 / seconds })}`);
      await uploads.getByRole("button", { name: "Dismiss bench-1gib.bam" }).click();
      // Each run's object is deleted, so the local disk holds one at a time.
      const row = page.locator('tr[data-attachment="bench-1gib.bam"]');
      await row.getByRole("button", { name: "Delete bench-1gib.bam" }).click();
      await page.getByRole("dialog", { name: "Delete this attachment?" }).getByRole("button", { name: "Delete" }).click();
      await expect(row).toHaveCount(0);
    }
  }
  await rm(dir, { recursive: true });
});
