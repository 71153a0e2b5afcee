// SMART on FHIR's App Launch in Chromium, driven by SMART's own JavaScript client (npm
// fhirclient, its browser build: FHIRCLIENT_JS), not our code: a standalone launch (the app
// starts the flow; the user signs in to the console, reads the access asked for in words, picks
// the patient and approves; a user with an authenticator app gives its code at that sign-in)
// and an EHR launch (the user opens the app from a patient's page).
// Each time the app's `FHIR.oauth2.ready()` exchanges the code with its PKCE verifier and reads
// and searches through `client.request`. The app's pages live under the console's origin (which
// the API's CORS rule grants), served by the test itself.
import { readFileSync } from "node:fs";
import { expect, test, type APIRequestContext, type Page } from "@playwright/test";
import * as OTPAuth from "otpauth";
import { admin, checkPage, logIn } from "./support";

const apiUrl = (process.env.API_URL ?? "http://127.0.0.1:9000").replace(/\/+$/, "");
const fhirClientJs = process.env.FHIRCLIENT_JS;
const run = Date.now().toString(36);

test.describe.configure({ mode: "serial" });

/** The app's pages: launch.html starts the flow, index.html finishes it and shows what it read. */
async function serveApp(page: Page, consoleOrigin: string, clientId: string, scope: string, iss?: string) {
  if (!fhirClientJs) throw new Error("FHIRCLIENT_JS names fhirclient's browser build (scripts/test sets it)");
  const library = readFileSync(fhirClientJs, "utf8");
  const launch = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Growth charts</title>
    <script src="fhir-client.js"></script></head><body><main><h1>Connecting…</h1></main><script>
    FHIR.oauth2.authorize(${JSON.stringify({ clientId, scope, redirectUri: "index.html", pkceMode: "required", ...(iss ? { iss } : {}) })})
      .catch((e) => { document.querySelector("h1").textContent = "Failed: " + e.message; });
    </script></body></html>`;
  const index = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Growth charts</title>
    <script src="fhir-client.js"></script></head><body><main><h1>Loading…</h1><p id="documents"></p></main><script>
    FHIR.oauth2.ready().then(async (client) => {
      const patient = await client.request("Patient/" + client.patient.id);
      const documents = await client.request("DocumentReference?patient=" + client.patient.id);
      const everyone = await client.request("Patient");
      document.querySelector("h1").textContent = "Patient: " + patient.name[0].text;
      document.querySelector("#documents").textContent =
        "Documents: " + (documents.entry || []).length + "; patients visible: " + (everyone.entry || []).length;
    }).catch((e) => { document.querySelector("h1").textContent = "Failed: " + e.message; });
    </script></body></html>`;
  // Pages the test serves have no address of their own, so Chromium's Local Network Access
  // treats them as public and asks before they reach the loopback API: granted, as a user would
  // (a deployed app and API are public https origins, where the question never comes up).
  await page.context().grantPermissions(["local-network-access"], { origin: consoleOrigin });
  await page.route(`${consoleOrigin}/smart-app/**`, (route) => {
    const path = new URL(route.request().url()).pathname;
    if (path.endsWith("/fhir-client.js")) return route.fulfill({ contentType: "text/javascript", body: library });
    if (path.endsWith("/launch.html")) return route.fulfill({ contentType: "text/html", body: launch });
    return route.fulfill({ contentType: "text/html", body: index });
  });
}

async function adminHeaders(request: APIRequestContext) {
  const login = await request.post(`${apiUrl}/api/v1/login/access-token`, {
    form: { username: admin.email, password: admin.password },
  });
  return { Authorization: `Bearer ${(await login.json()).access_token}` };
}

/** A patient with one document, and another patient the app must never see. */
async function patients(request: APIRequestContext, headers: Record<string, string>, name: string) {
  const create = async (patientName: string) =>
    (await (await request.post(`${apiUrl}/api/v1/patients/`, { headers, data: { name: patientName } })).json()).id as string;
  const id = await create(name);
  await create(`Bystander ${run}`);
  const document = await request.post(`${apiUrl}/api/v1/attachments/`, {
    headers,
    data: { patient_id: id, file_name: "growth.pdf", mime_type: "application/pdf" },
  });
  expect(document.status()).toBe(200);
  return id;
}

async function register(request: APIRequestContext, headers: Record<string, string>, body: object) {
  const registered = await request.post(`${apiUrl}/api/v1/smart-clients/`, { headers, data: body });
  expect(registered.status()).toBe(201);
  return (await registered.json()).client_id as string;
}

/** Registers "Growth charts" (a public client of the patient's records), serves it, and opens its
 * standalone launch page. */
async function openGrowthCharts(page: Page, request: APIRequestContext, headers: Record<string, string>, consoleOrigin: string) {
  const scope = "launch/patient patient/*.rs openid fhirUser";
  const clientId = await register(request, headers, {
    client_name: "Growth charts",
    redirect_uris: [`${consoleOrigin}/smart-app/index.html`],
    token_endpoint_auth_method: "none",
    scope,
  });
  const iss = (await (await request.get(`${apiUrl}/fhir/R4/.well-known/smart-configuration`)).json()).issuer;
  await serveApp(page, consoleOrigin, clientId, scope, iss);
  await page.goto(`${consoleOrigin}/smart-app/launch.html`);
}

test("standalone launch with fhirclient: sign in, consent in words, pick the patient, then reads and searches", async ({ page, request, baseURL }) => {
  const consoleOrigin = new URL(baseURL ?? "").origin;
  const headers = await adminHeaders(request);
  const name = `Standalone Launch${run}`;
  await patients(request, headers, name);
  await openGrowthCharts(page, request, headers, consoleOrigin);
  await expect(page.getByRole("heading", { name: "Log in" })).toBeVisible();
  await logIn(page, admin.email, admin.password);
  await expect(page.getByRole("heading", { name: "Connect Growth charts" })).toBeVisible();
  await expect(page.getByText("Read, search all records of the selected patient")).toBeVisible();
  const approve = page.getByRole("button", { name: "Approve" });
  await expect(approve).toBeDisabled();
  await page.getByLabel("Search by name").fill(name);
  await page.getByRole("radio", { name: new RegExp(name) }).check();
  await checkPage(page, "smart-consent");
  await approve.click();

  await expect(page.getByRole("heading", { name: `Patient: ${name}` })).toBeVisible();
  // Its compartment only: its one document, and a search of every patient finds only it.
  await expect(page.getByText("Documents: 1; patients visible: 1")).toBeVisible();
});

test("standalone launch by a user with an authenticator app: the sign-in asks for the code", async ({ page, request, baseURL }) => {
  const consoleOrigin = new URL(baseURL ?? "").origin;
  const headers = await adminHeaders(request);
  const user = { email: `smart-totp-${run}@example.com`, password: "smart-totp-password-1" };
  expect((await request.post(`${apiUrl}/api/v1/users/`, { headers, data: { ...user, role: "clinician" } })).status()).toBe(200);
  const login = await request.post(`${apiUrl}/api/v1/login/access-token`, { form: { username: user.email, password: user.password } });
  const userHeaders = { Authorization: `Bearer ${(await login.json()).access_token}` };
  const begun = await request.post(`${apiUrl}/api/v1/users/me/mfa/totp`, { headers: userHeaders, data: { current_password: user.password } });
  const totp = new OTPAuth.TOTP({ secret: OTPAuth.Secret.fromBase32((await begun.json()).secret), algorithm: "SHA1", digits: 6, period: 30 });
  const confirmed = await request.post(`${apiUrl}/api/v1/users/me/mfa/totp/confirm`, { headers: userHeaders, data: { code: totp.generate() } });
  expect(confirmed.status()).toBe(200);

  const name = `Second Factor Launch${run}`;
  await patients(request, headers, name);
  await openGrowthCharts(page, request, headers, consoleOrigin);
  await logIn(page, user.email, user.password);
  await expect(page.getByRole("heading", { name: "Second factor" })).toBeVisible();
  // The confirmation spent this step's code: the next step's, as an app a little ahead shows it.
  await page.getByLabel("Authentication code").fill(totp.generate({ timestamp: Date.now() + 30_000 }));
  await page.getByLabel("Authentication code").press("Enter");
  await expect(page.getByRole("heading", { name: "Connect Growth charts" })).toBeVisible();
  await page.getByLabel("Search by name").fill(name);
  await page.getByRole("radio", { name: new RegExp(name) }).check();
  await page.getByRole("button", { name: "Approve" }).click();
  await expect(page.getByRole("heading", { name: `Patient: ${name}` })).toBeVisible();
});

test("EHR launch with fhirclient: Open in app from the patient's page binds that patient", async ({ page, request, baseURL }) => {
  const consoleOrigin = new URL(baseURL ?? "").origin;
  const headers = await adminHeaders(request);
  const name = `Ehr Launch${run}`;
  const patientId = await patients(request, headers, name);
  const scope = "launch patient/*.rs openid fhirUser";
  const clientId = await register(request, headers, {
    client_name: `Scheduler ${run}`,
    redirect_uris: [`${consoleOrigin}/smart-app/index.html`],
    token_endpoint_auth_method: "none",
    launch_url: `${consoleOrigin}/smart-app/launch.html`,
    scope,
  });
  // fhirclient takes iss and launch from the launch URL's query.
  await serveApp(page, consoleOrigin, clientId, scope);

  await page.goto(`/patients/${patientId}`);
  await logIn(page, admin.email, admin.password);
  await expect(page.getByRole("heading", { name })).toBeVisible();
  await page.getByRole("button", { name: "Open in app" }).click();
  await page.getByRole("menuitem", { name: `Scheduler ${run}` }).click();
  await expect(page.getByRole("heading", { name: `Connect Scheduler ${run}` })).toBeVisible();
  await expect(page.getByLabel("Search by name")).toHaveCount(0);
  await page.getByRole("button", { name: "Approve" }).click();

  await expect(page.getByRole("heading", { name: `Patient: ${name}` })).toBeVisible();
  await expect(page.getByText("Documents: 1; patients visible: 1")).toBeVisible();
});

test("a superuser registers an app, sees its secret once, and revokes it", async ({ page }) => {
  await page.goto("/connected-apps");
  await logIn(page, admin.email, admin.password);
  await expect(page.getByRole("heading", { name: "Connected apps" })).toBeVisible();
  await page.getByRole("button", { name: "Register an app" }).click();
  const dialog = page.getByRole("dialog", { name: "Register an app" });
  await dialog.getByLabel("Name").fill(`Billing ${run}`);
  await dialog.getByLabel("How it signs in").click();
  await page.getByRole("option", { name: "Confidential app with a secret" }).click();
  await dialog.getByLabel("Redirect URIs").fill("https://billing.example/callback");
  await dialog.getByLabel("Scope").fill("user/*.rs");
  await dialog.getByRole("button", { name: "Register" }).click();
  await expect(page.getByTestId("client-secret")).toHaveText(/^[A-Za-z0-9_-]{43}$/);
  await checkPage(page, "connected-apps");
  await page.getByRole("button", { name: "Hide the secret" }).click();
  await expect(page.getByTestId("client-secret")).toHaveCount(0);
  await page.getByRole("button", { name: `Revoke Billing ${run}` }).click();
  await page.getByRole("dialog", { name: "Revoke this app?" }).getByRole("button", { name: "Revoke" }).click();
  await expect(page.getByRole("cell", { name: `Billing ${run}` })).toHaveCount(0);
});
