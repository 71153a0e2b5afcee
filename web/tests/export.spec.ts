// Patient groups and bulk export in the console: a superuser builds a group with the patient
// search, exports it, and downloads the file the export wrote (the export runs on the API's
// worker, fed by the local queue as the event source mapping feeds it in AWS).
import { expect, test } from "@playwright/test";
import { admin, checkPage, logIn } from "./support";

const apiUrl = (process.env.API_URL ?? "http://127.0.0.1:9000").replace(/\/+$/, "");
const run = Date.now().toString(36);

test("a superuser groups patients, exports the group and downloads its records", async ({ page, request }) => {
  const login = await request.post(`${apiUrl}/api/v1/login/access-token`, { form: { username: admin.email, password: admin.password } });
  const headers = { Authorization: `Bearer ${(await login.json()).access_token}` };
  const member = `Cohort Member${run}`;
  for (const name of [member, `Not Exported${run}`]) {
    expect((await request.post(`${apiUrl}/api/v1/patients/`, { headers, data: { name } })).status()).toBe(200);
  }

  await page.goto("/groups");
  await logIn(page, admin.email, admin.password);
  await expect(page.getByRole("heading", { name: "Patient groups" })).toBeVisible();
  await page.getByRole("button", { name: "New group" }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByLabel("Name").fill(`Export cohort ${run}`);
  await dialog.getByLabel("Add patients").fill(member);
  await dialog.getByRole("button", { name: `Add ${member}` }).click();
  await expect(dialog.getByRole("list", { name: "Members" })).toContainText(member);
  await checkPage(page, "group-editor");
  await dialog.getByRole("button", { name: "Save group" }).click();
  const row = page.getByRole("row", { name: new RegExp(`Export cohort ${run}`) });
  await expect(row).toContainText("1");
  await checkPage(page, "groups");

  await page.getByRole("link", { name: "Bulk export" }).click();
  await expect(page.getByRole("heading", { name: "Bulk export" })).toBeVisible();
  await page.getByRole("combobox", { name: "Records" }).click();
  await page.getByRole("option", { name: /One group's patients/ }).click();
  await page.getByRole("combobox", { name: "Group" }).click();
  await page.getByRole("option", { name: new RegExp(`Export cohort ${run}`) }).click();
  await checkPage(page, "export-form");
  await page.getByRole("button", { name: "Start export" }).click();
  await expect(page.getByText(/Export complete/)).toBeVisible({ timeout: 60_000 });
  await checkPage(page, "export-done");

  // One patient in the Patient file: the group's member, as FHIR NDJSON.
  const patients = page.getByRole("row", { name: /^Patient/ });
  await expect(patients).toContainText("1");
  const href = await patients.getByRole("link").getAttribute("href");
  const file = await request.get(href ?? "");
  expect(file.status()).toBe(200);
  const lines = (await file.text()).trim().split("\n").map((line) => JSON.parse(line));
  expect(lines).toHaveLength(1);
  expect(lines[0].resourceType).toBe("Patient");
  expect(lines[0].name[0].text).toBe(member);

  // Deleting the files takes the export away.
  await page.getByRole("button", { name: "Delete the files" }).click();
  await expect(page.getByRole("button", { name: "Start export" })).toBeVisible();
  expect((await request.get(href ?? "")).status()).toBe(404);
});
