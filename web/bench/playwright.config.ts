import { defineConfig } from "@playwright/test";
import base from "../playwright.config";

// scripts/bench uploads: the console's upload code path timed in Chromium (not a test run).
export default defineConfig({ ...base, testDir: ".", timeout: 3_600_000, outputDir: "../../target/playwright-bench" });
