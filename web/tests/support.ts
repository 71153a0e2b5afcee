import { mkdirSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import AxeBuilder from "@axe-core/playwright";
import { expect, type Page } from "@playwright/test";

export const screenshotDir = path.resolve(import.meta.dirname, "../../target/screenshots");
mkdirSync(screenshotDir, { recursive: true });

export const admin = {
  email: process.env.FIRST_SUPERUSER ?? "admin@example.com",
  password: process.env.FIRST_SUPERUSER_PASSWORD ?? "changethis",
};

/**
 * Every page the tests visit goes through here: a screenshot under target/screenshots, and axe's
 * WCAG 2.1 A/AA rules with no serious or critical violation.
 */
export async function checkPage(page: Page, name: string) {
  await page.waitForLoadState("networkidle");
  await page.screenshot({ path: path.join(screenshotDir, `${name}.png`), fullPage: true });
  const results = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]).analyze();
  const serious = results.violations
    .filter((violation) => violation.impact === "serious" || violation.impact === "critical")
    .map(
      (violation) =>
        `${violation.id} (${violation.impact}): ${violation.help} at ${violation.nodes.map((node) => `${node.html.slice(0, 120)} [${node.failureSummary?.replace(/\s+/g, " ").slice(0, 160)}]`).join(", ")}`,
    );
  expect(serious, `accessibility violations on ${name}`).toEqual([]);
}

export async function logIn(page: Page, email: string, password: string) {
  await page.getByLabel("Email").fill(email);
  await page.getByRole("textbox", { name: "Password", exact: true }).fill(password);
  // Keyboard submit, as a user without a mouse would.
  await page.getByRole("textbox", { name: "Password", exact: true }).press("Enter");
}

export async function logOut(page: Page) {
  await page.getByRole("button", { name: "Log out" }).click();
  await expect(page.getByRole("heading", { name: "Log in" })).toBeVisible();
}

/** The text of the newest message the local SMTP sink received for `recipient`. */
export function latestMailTo(recipient: string): string | null {
  const dir = process.env.SMTP_SINK_DIR;
  if (!dir) throw new Error("SMTP_SINK_DIR is not set");
  const files = readdirSync(dir)
    .filter((name) => name.endsWith(".eml"))
    .sort()
    .reverse();
  for (const name of files) {
    const raw = readFileSync(path.join(dir, name), "utf8");
    const envelope = /^X-Envelope-To: (.*)$/m.exec(raw)?.[1] ?? "";
    if (envelope.includes(recipient)) return decodeMail(raw);
  }
  return null;
}

// The message with its quoted-printable and base64 parts decoded, enough to find a link in.
function decodeMail(raw: string): string {
  const quotedPrintable = raw.replace(/=\r?\n/g, "").replace(/=([0-9A-F]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  const base64Parts = [...raw.matchAll(/Content-Transfer-Encoding: base64\r?\n(?:[^\r\n]+\r?\n)*\r?\n([A-Za-z0-9+/=\r\n]+)/g)].map((match) =>
    Buffer.from(match[1].replace(/\s+/g, ""), "base64").toString("utf8"),
  );
  return [quotedPrintable, ...base64Parts].join("\n");
}

export async function waitForMail(recipient: string, containing: RegExp): Promise<string> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const mail = latestMailTo(recipient);
    if (mail && containing.test(mail)) return mail;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`no mail to ${recipient} matching ${containing}`);
}
