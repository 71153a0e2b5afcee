import { defineConfig } from "@playwright/test";

// Runs against a console and API already serving (scripts/test, or scripts/dev by hand), in
// Debian's Chromium: Playwright's own browser downloads are not used.
export default defineConfig({
  testDir: "tests",
  timeout: 120_000,
  expect: { timeout: 15_000 },
  workers: 1,
  retries: 0,
  reporter: [["list"]],
  outputDir: "../target/playwright",
  use: {
    baseURL: process.env.CONSOLE_URL ?? "http://127.0.0.1:5173",
    headless: true,
    acceptDownloads: true,
    trace: "retain-on-failure",
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    },
  },
});
