// The console's whole job in a real browser, against the real API, database, S3 and mail sink:
// log in as the first superuser, create a clinician, work as the clinician (create a patient,
// find it by typing part of its name, upload 1 MB and download it byte for byte, see the
// conflict of two tabs editing the same patient), the audit trail, password reset from the
// emailed link, user roles and deactivation, deleting, and log out. Every page is screenshotted and checked with axe.
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect, test, type Page } from "@playwright/test";
import { admin, checkPage, logIn, logOut, waitForMail } from "./support";

const run = Date.now().toString(36);
const clinician = { email: `clinician-${run}@example.com`, password: `Clinician-${run}-pw`, name: "Casey Clinician" };
// A surname no earlier run used: the search must find exactly this patient by a part of it.
const surname = `Q${run}arrington`;
const patientName = `Ottoline ${surname}`;
const typed = surname.slice(0, run.length + 1).toLowerCase();
const file = { name: "chest-xray-report.pdf", mimeType: "application/pdf", buffer: randomBytes(1024 * 1024) };

test.describe.configure({ mode: "serial" });

let patientPath = "";

test("the first superuser logs in and creates a clinician", async ({ page }) => {
  await page.goto("/");
  await expect(page.getByRole("heading", { name: "Log in" })).toBeVisible();
  await checkPage(page, "01-login");

  await logIn(page, admin.email, "not-the-password");
  await expect(page.getByRole("alert")).toContainText("Incorrect email or password");
  await logIn(page, admin.email, admin.password);
  await expect(page.getByRole("heading", { name: "Patients" })).toBeVisible();

  await page.getByRole("link", { name: "Users" }).click();
  await expect(page.getByRole("heading", { name: "Users" })).toBeVisible();
  await page.getByRole("button", { name: "New user" }).click();
  const dialog = page.getByRole("dialog", { name: "New user" });
  await dialog.getByLabel("Email").fill(clinician.email);
  await dialog.getByLabel("Full name").fill(clinician.name);
  await dialog.getByLabel("Initial password").fill("short");
  await dialog.getByRole("button", { name: "Create user" }).click();
  // The API's own detail text, as sent.
  await expect(dialog.getByRole("alert")).toContainText("password");
  await dialog.getByLabel("Initial password").fill(clinician.password);
  await checkPage(page, "02-user-create");
  await dialog.getByRole("button", { name: "Create user" }).click();
  await expect(dialog).toBeHidden();
  const row = page.locator(`tr[data-user="${clinician.email}"]`);
  await expect(row).toBeVisible();
  await expect(row.getByLabel(`Role of ${clinician.email}`)).toHaveValue(/Clinician/);
  await checkPage(page, "03-users");
  await logOut(page);
});

test("the clinician creates a patient and finds it by typing part of the name", async ({ page }) => {
  await page.goto("/patients");
  await logIn(page, clinician.email, clinician.password);
  await expect(page.getByRole("heading", { name: "Patients" })).toBeVisible();
  await expect(page.getByRole("link", { name: "Users" })).toHaveCount(0);

  await page.getByRole("link", { name: "New patient" }).click();
  await page.getByLabel("Name").fill(patientName);
  await page.getByLabel("Date of birth").fill("1961-07-14");
  await page.getByLabel("Contact information").fill("+44 20 7946 0000");
  await page.getByLabel("Medical history").fill("Type 2 diabetes since 2009. Penicillin allergy.");
  await checkPage(page, "04-patient-new");
  await page.getByRole("button", { name: "Create patient" }).click();
  await expect(page.getByRole("heading", { name: patientName })).toBeVisible();
  patientPath = new URL(page.url()).pathname;
  expect(patientPath).toMatch(/^\/patients\/[0-9a-f-]{36}$/);

  await page.getByRole("link", { name: "Patients", exact: true }).click();
  const search = page.getByLabel("Search by name");
  // Part of the surname, typed as a person types it.
  await search.pressSequentially(typed, { delay: 40 });
  await expect(page.getByRole("link", { name: patientName })).toBeVisible();
  await expect(page.getByRole("status").filter({ hasText: "1 patient" })).toBeVisible();
  // Nothing typed ends up in the address bar.
  expect(page.url()).not.toContain(typed);
  await checkPage(page, "05-patients-search");

  await page.getByLabel("Medical history contains").fill("asthma");
  await expect(page.getByText("0 patients")).toBeVisible();
  await page.getByLabel("Medical history contains").fill("diabetes");
  await expect(page.getByRole("link", { name: patientName })).toBeVisible();
});

test("the clinician uploads 1 MB, sees it uploaded, and downloads the same bytes", async ({ page }) => {
  await page.goto(patientPath);
  await logIn(page, clinician.email, clinician.password);
  await expect(page.getByRole("heading", { name: patientName })).toBeVisible();

  const chooser = page.waitForEvent("filechooser");
  await page.getByRole("button", { name: "Choose files…" }).click();
  await (await chooser).setFiles(file);
  const uploads = page.getByRole("list", { name: "Uploads" });
  await expect(uploads.getByText("Uploaded", { exact: true })).toBeVisible();
  await expect(uploads.getByRole("progressbar")).toHaveAttribute("aria-valuenow", "100");
  const row = page.locator(`tr[data-attachment="${file.name}"]`);
  await expect(row).toContainText("Uploaded");
  await expect(row).toContainText("1.0 MB");
  await checkPage(page, "06-patient-attachments");

  const download = page.waitForEvent("download");
  await row.getByRole("button", { name: `Download ${file.name}` }).click();
  const downloaded = await download;
  expect(downloaded.suggestedFilename()).toBe(file.name);
  const bytes = await readFile(await downloaded.path());
  expect(bytes.length).toBe(file.buffer.length);
  expect(bytes.equals(file.buffer)).toBe(true);
});

test("a 40 MiB file goes up in parts, pauses, resumes, survives a reload mid-way without resending a part, and downloads the same bytes", async ({ page }) => {
  // scripts/test lowers the API's multipart threshold to 16 MiB: 40 MiB is 5 parts of 8 MiB.
  const large = { name: "tumour-sample.bam", buffer: randomBytes(40 * 1024 * 1024) };
  const dir = await mkdtemp(path.join(tmpdir(), "carevault-"));
  const onDisk = path.join(dir, large.name);
  await writeFile(onDisk, large.buffer);
  // Parts are slowed down so that the reload lands between parts; each stored part is noted.
  const stored: number[] = [];
  await page.route(/partNumber=/, async (route) => {
    await new Promise((resolve) => setTimeout(resolve, 700));
    // The reload may have cancelled the request meanwhile.
    await route.continue().catch(() => undefined);
  });
  page.on("response", (response) => {
    const part = /partNumber=(\d+)/.exec(response.url());
    if (part && response.request().method() === "PUT" && response.ok()) stored.push(Number(part[1]));
  });

  await page.goto(patientPath);
  await logIn(page, clinician.email, clinician.password);
  await expect(page.getByRole("heading", { name: patientName })).toBeVisible();
  await page.getByLabel("Parts in flight").selectOption("1");
  let chooser = page.waitForEvent("filechooser");
  await page.getByRole("button", { name: "Choose files…" }).click();
  await (await chooser).setFiles(onDisk);
  const uploads = page.getByRole("list", { name: "Uploads" });
  await expect(uploads.getByTestId("upload-details")).toContainText("1 of 5 parts");
  // Pause stops the part in flight; resume goes on from the parts stored. (The page is checked
  // while paused: checkPage waits for the network to go quiet, which an upload never lets it.)
  await uploads.getByRole("button", { name: "Pause" }).click();
  await expect(uploads.getByText("Paused", { exact: true })).toBeVisible();
  await checkPage(page, "06b-multipart-paused");
  await uploads.getByRole("button", { name: "Resume" }).click();
  await expect(uploads.getByTestId("upload-details")).toContainText("2 of 5 parts");

  await page.reload();
  const before = [...stored];
  expect(before.length).toBeGreaterThanOrEqual(2);
  expect(before.length).toBeLessThan(5);
  const interrupted = page.getByRole("list", { name: "Interrupted uploads" });
  await expect(interrupted).toContainText(large.name);
  await checkPage(page, "06c-multipart-interrupted");
  chooser = page.waitForEvent("filechooser");
  await page.getByRole("button", { name: "Choose files…" }).click();
  await (await chooser).setFiles(onDisk);
  await expect(uploads.getByText("Uploaded", { exact: true })).toBeVisible({ timeout: 60_000 });
  await expect(interrupted).toHaveCount(0);
  // Every part stored exactly once: none that arrived before the reload was sent again.
  expect([...stored].sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5]);

  const row = page.locator(`tr[data-attachment="${large.name}"]`);
  await expect(row).toContainText("Uploaded");
  const download = page.waitForEvent("download");
  await row.getByRole("button", { name: `Download ${large.name}` }).click();
  const bytes = await readFile(await (await download).path());
  expect(bytes.equals(large.buffer)).toBe(true);

  await row.getByRole("button", { name: `Delete ${large.name}` }).click();
  await page.getByRole("dialog", { name: "Delete this attachment?" }).getByRole("button", { name: "Delete" }).click();
  await expect(row).toHaveCount(0);
  await rm(dir, { recursive: true });
});

test("editing the same patient in two tabs: the second save shows the conflict", async ({ context }) => {
  const first = await context.newPage();
  await first.goto(`${patientPath}/edit`);
  await logIn(first, clinician.email, clinician.password);
  // The login brought the tab back to the edit page it was asked for.
  await expect(first.getByRole("heading", { name: "Edit patient" })).toBeVisible();

  const second = await context.newPage();
  await second.goto(`${patientPath}/edit`);
  await logIn(second, clinician.email, clinician.password);
  await expect(second.getByRole("heading", { name: "Edit patient" })).toBeVisible();
  await expect(second.getByLabel("Name")).toHaveValue(patientName);
  await checkPage(second, "07-patient-edit");

  await first.getByLabel("Contact information").fill("+44 20 7946 0001");
  await first.getByRole("button", { name: "Save changes" }).click();
  await expect(first.getByRole("heading", { name: patientName })).toBeVisible();

  await second.getByLabel("Contact information").fill("+44 20 7946 0999");
  await second.getByRole("button", { name: "Save changes" }).click();
  await expect(second.getByRole("alert")).toContainText("changed by someone else");
  await checkPage(second, "08-patient-edit-conflict");

  await second.getByRole("button", { name: "Reload the current version" }).click();
  await expect(second.getByLabel("Contact information")).toHaveValue("+44 20 7946 0001");
});

test("an expired session goes to login and comes back to the same page", async ({ page }) => {
  await page.goto(patientPath);
  await logIn(page, clinician.email, clinician.password);
  await expect(page.getByRole("heading", { name: patientName })).toBeVisible();
  await page.evaluate(() => sessionStorage.setItem("carevault.access_token", "expired.or.revoked"));
  await page.reload();
  await expect(page.getByRole("heading", { name: "Log in" })).toBeVisible();
  await logIn(page, clinician.email, clinician.password);
  await expect(page.getByRole("heading", { name: patientName })).toBeVisible();
  expect(new URL(page.url()).pathname).toBe(patientPath);
});

test("my account, readable on a phone", async ({ page }) => {
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto("/account");
  await logIn(page, clinician.email, clinician.password);
  await expect(page.getByRole("heading", { name: "My account" })).toBeVisible();
  await page.getByLabel("Full name").fill("Casey Q. Clinician");
  await page.getByRole("button", { name: "Save profile" }).click();
  await expect(page.getByText("Profile saved.")).toBeVisible();
  await page.getByRole("region", { name: "Password", exact: true }).getByLabel("Current password").fill("wrong-password");
  await page.getByRole("textbox", { name: "New password", exact: true }).fill(`${clinician.password}-2`);
  await page.getByLabel("Repeat the new password").fill(`${clinician.password}-2`);
  await page.getByRole("button", { name: "Change password" }).click();
  await expect(page.getByRole("alert")).toContainText("Incorrect password");
  await checkPage(page, "09-account-phone");
  await expectNoSideways(page);

  await page.goto("/patients");
  await expect(page.getByRole("heading", { name: "Patients" })).toBeVisible();
  await checkPage(page, "10-patients-phone");
  await expectNoSideways(page);
  await page.getByRole("button", { name: "Menu" }).click();
  await expect(page.getByRole("link", { name: "My account" })).toBeVisible();
  await logOut(page);
});

test("a superuser reads the patient's audit trail", async ({ page }) => {
  await page.goto(patientPath);
  await logIn(page, admin.email, admin.password);
  const trail = page.getByRole("table", { name: "Audit trail" });
  await expect(trail).toBeVisible();
  await expect(trail).toContainText("patient.create");
  await expect(trail).toContainText(clinician.email);
  await checkPage(page, "11-patient-audit-trail");
  await logOut(page);
});

test("a forgotten password is reset from the emailed link", async ({ page }) => {
  await page.goto("/login");
  await page.getByRole("link", { name: "Forgot your password?" }).click();
  await page.getByLabel("Email").fill(clinician.email);
  await checkPage(page, "12-forgot-password");
  await page.getByRole("button", { name: "Send reset link" }).click();
  await expect(page.getByText("Check your email")).toBeVisible();

  const mail = await waitForMail(clinician.email, /reset-password\?token=/);
  const link = /https?:\/\/[^\s"<>]+\/reset-password\?token=[A-Za-z0-9._-]+/.exec(mail)?.[0];
  expect(link, "a reset link in the email").toBeTruthy();
  await page.goto(link!);
  await expect(page.getByRole("heading", { name: "Set a new password" })).toBeVisible();
  // The token is taken out of the address bar once read.
  expect(page.url()).not.toContain("token=");
  await checkPage(page, "13-reset-password");
  const newPassword = `${clinician.password}-reset`;
  await page.getByRole("textbox", { name: "New password", exact: true }).fill(newPassword);
  await page.getByLabel("Repeat the new password").fill(newPassword);
  await page.getByRole("button", { name: "Set password" }).click();
  await expect(page.getByText("Password updated")).toBeVisible();

  await page.getByRole("link", { name: "Go to log in" }).click();
  await logIn(page, clinician.email, newPassword);
  await expect(page.getByRole("heading", { name: "Patients" })).toBeVisible();
  await logOut(page);
});

test("a superuser changes a user's role and deactivates them, who then cannot log in", async ({ page }) => {
  const other = { email: `viewer-${run}@example.com`, password: `Viewer-${run}-pw` };
  await page.goto("/users");
  await logIn(page, admin.email, admin.password);
  await page.getByRole("button", { name: "New user" }).click();
  const dialog = page.getByRole("dialog", { name: "New user" });
  await dialog.getByLabel("Email").fill(other.email);
  await dialog.getByLabel("Initial password").fill(other.password);
  await dialog.getByRole("button", { name: "Create user" }).click();
  const row = page.locator(`tr[data-user="${other.email}"]`);
  await expect(row).toBeVisible();

  await row.getByLabel(`Role of ${other.email}`).click();
  await page.getByRole("option", { name: /Viewer/ }).click();
  await expect(page.getByText(`${other.email} is now a viewer`)).toBeVisible();
  // From the keyboard: the switch takes focus and Space toggles it.
  await row.getByLabel(`${other.email} is active`).focus();
  await page.keyboard.press("Space");
  await expect(page.getByText(`${other.email} deactivated`)).toBeVisible();
  await page.reload();
  await expect(row.getByLabel(`Role of ${other.email}`)).toHaveValue(/Viewer/);
  await expect(row.getByLabel(`${other.email} is active`)).not.toBeChecked();
  await logOut(page);

  await logIn(page, other.email, other.password);
  await expect(page.getByRole("alert")).toContainText("Inactive user");
});

test("the clinician deletes the attachment, then the patient", async ({ page }) => {
  await page.goto(patientPath);
  await logIn(page, clinician.email, `${clinician.password}-reset`);
  const row = page.locator(`tr[data-attachment="${file.name}"]`);
  await row.getByRole("button", { name: `Delete ${file.name}` }).click();
  await checkPage(page, "14-attachment-delete");
  await page.getByRole("dialog", { name: "Delete this attachment?" }).getByRole("button", { name: "Delete" }).click();
  await expect(row).toHaveCount(0);
  await expect(page.getByText("No attachments yet.")).toBeVisible();

  await page.getByRole("button", { name: "Delete patient" }).click();
  await page.getByRole("dialog", { name: "Delete this patient?" }).getByRole("button", { name: "Delete patient" }).click();
  await expect(page.getByRole("heading", { name: "Patients" })).toBeVisible();
  await page.goto(patientPath);
  await expect(page.getByRole("alert")).toContainText("Patient not found");
});

async function expectNoSideways(page: Page) {
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(overflow, "the page scrolls sideways").toBeLessThanOrEqual(0);
}
