// Second factors in the console: an authenticator app (its QR code read back by jsQR, codes by
// the otpauth library, not ours)
// and a passkey made by Chromium's virtual authenticator (DevTools' WebAuthn domain). Passkeys
// need a domain name, so that test opens the console as localhost (browsers refuse WebAuthn on
// an IP address; the API's relying party is WEBAUTHN_ORIGIN).
import { expect, test, type APIRequestContext } from "@playwright/test";
import * as OTPAuth from "otpauth";
import { readFileSync } from "node:fs";
import jsQR from "jsqr";
import { PNG } from "pngjs";
import { admin, checkPage, logIn, logOut } from "./support";

const apiUrl = (process.env.API_URL ?? "http://127.0.0.1:9000").replace(/\/+$/, "");
const run = Date.now().toString(36);

async function newUser(request: APIRequestContext, name: string): Promise<{ email: string; password: string }> {
  const login = await request.post(`${apiUrl}/api/v1/login/access-token`, { form: { username: admin.email, password: admin.password } });
  const headers = { Authorization: `Bearer ${(await login.json()).access_token}` };
  const user = { email: `${name}-${run}@example.com`, password: `${name}-password-1` };
  const created = await request.post(`${apiUrl}/api/v1/users/`, { headers, data: { ...user, role: "clinician" } });
  expect(created.status()).toBe(200);
  return user;
}

test("a user turns on an authenticator app, keeps the recovery codes and signs in with a code", async ({ page, request }) => {
  const user = await newUser(request, "totp");
  await page.goto("/account");
  await logIn(page, user.email, user.password);
  await expect(page.getByRole("heading", { name: "My account" })).toBeVisible();
  const app = page.getByRole("form", { name: "Authenticator app" });
  await app.getByLabel("Current password").fill(user.password);
  await app.getByRole("button", { name: "Set up an authenticator app" }).click();
  const qr = page.getByRole("img", { name: /QR code/ });
  await expect(qr).toBeVisible();
  await checkPage(page, "mfa-totp-setup");
  const secret = (await page.getByTestId("totp-secret").textContent()) ?? "";
  // What a phone's camera reads from the QR code, as jsQR decodes the pixels.
  const png = PNG.sync.read(await qr.screenshot());
  const scanned = jsQR(new Uint8ClampedArray(png.data), png.width, png.height);
  expect(scanned?.data).toMatch(new RegExp(`^otpauth://totp/CareVault:.*secret=${secret}&.*issuer=CareVault`));
  const totp = new OTPAuth.TOTP({ secret: OTPAuth.Secret.fromBase32(secret), algorithm: "SHA1", digits: 6, period: 30 });
  await app.getByLabel("The 6-digit code the app shows").fill(totp.generate());
  await app.getByRole("button", { name: "Turn on" }).click();
  const codes = page.getByRole("list", { name: "Recovery codes" }).getByRole("listitem");
  await expect(codes).toHaveCount(10);
  await expect(app.getByText("On")).toBeVisible();
  await checkPage(page, "mfa-recovery-codes");
  const downloaded = page.waitForEvent("download");
  await page.getByRole("link", { name: "Download" }).click();
  const file = readFileSync((await (await downloaded).path()) ?? "", "utf8").trim().split("\n");
  expect(file).toEqual(await codes.allTextContents());

  await logOut(page);
  await logIn(page, user.email, user.password);
  await expect(page.getByRole("heading", { name: "Second factor" })).toBeVisible();
  await checkPage(page, "mfa-second-factor");
  // The confirmation spent this step's code: the next step's, as an app a little ahead shows it.
  await page.getByLabel("Authentication code").fill(totp.generate({ timestamp: Date.now() + 30_000 }));
  await page.getByLabel("Authentication code").press("Enter");
  await expect(page.getByText(`Signed in as ${user.email}`)).toBeVisible();
});

test("a passkey made by the browser's authenticator signs in", async ({ page, request }) => {
  const user = await newUser(request, "passkey");
  const origin = new URL(process.env.CONSOLE_URL ?? "http://127.0.0.1:5173");
  origin.hostname = "localhost";
  await page.goto(new URL("/account", origin).toString());
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: { protocol: "ctap2", transport: "internal", hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true },
  });
  await logIn(page, user.email, user.password);
  const add = page.getByRole("form", { name: "Add a passkey" });
  await add.getByLabel("Passkey name").fill("Work laptop");
  await add.getByLabel("Current password").fill(user.password);
  await add.getByRole("button", { name: "Add a passkey" }).click();
  await expect(page.getByRole("table", { name: "Passkeys" })).toContainText("Work laptop");
  await expect(page.getByRole("list", { name: "Recovery codes" }).getByRole("listitem")).toHaveCount(10);
  await checkPage(page, "mfa-passkey-added");

  await logOut(page);
  await logIn(page, user.email, user.password);
  await page.getByRole("button", { name: "Use a passkey" }).click();
  await expect(page.getByText(`Signed in as ${user.email}`)).toBeVisible();
  await expect(page.getByRole("table", { name: "Passkeys" })).not.toContainText("never");
  const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
  expect(credentials).toHaveLength(1);
  expect(credentials[0].signCount).toBeGreaterThanOrEqual(2);
});

test("a superuser resets a user's second factors from the users page", async ({ page, request }) => {
  const user = await newUser(request, "reset");
  const login = await request.post(`${apiUrl}/api/v1/login/access-token`, { form: { username: user.email, password: user.password } });
  const headers = { Authorization: `Bearer ${(await login.json()).access_token}` };
  const begun = await request.post(`${apiUrl}/api/v1/users/me/mfa/totp`, { headers, data: { current_password: user.password } });
  const totp = new OTPAuth.TOTP({ secret: OTPAuth.Secret.fromBase32((await begun.json()).secret), algorithm: "SHA1", digits: 6, period: 30 });
  expect((await request.post(`${apiUrl}/api/v1/users/me/mfa/totp/confirm`, { headers, data: { code: totp.generate() } })).status()).toBe(200);
  const signIn = () => request.post(`${apiUrl}/api/v1/login/access-token`, { form: { username: user.email, password: user.password } });
  expect((await signIn()).status()).toBe(401);

  await page.goto("/users");
  await logIn(page, admin.email, admin.password);
  await expect(page.getByRole("heading", { name: "Users" })).toBeVisible();
  page.once("dialog", (dialog) => void dialog.accept());
  await page.getByRole("button", { name: `Reset the second factors of ${user.email}` }).click();
  await expect(page.getByText(`${user.email}'s second factors were removed`)).toBeVisible();
  await checkPage(page, "mfa-reset");
  // The lost phone no longer stands between the user and their account: a password signs in.
  expect((await signIn()).status()).toBe(200);
});
