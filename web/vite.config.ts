/// <reference types="vitest/config" />
import { defineConfig, type Plugin } from "vitest/config";

// Locally the console and the API share one origin: the dev and preview servers pass /api and /fhir to the
// API (cargo lambda watch). In AWS the API's URL is given at build time (VITE_API_URL).
const apiTarget = process.env.CAREVAULT_API_PROXY ?? "http://127.0.0.1:9000";
// The API sees its own host, as behind CloudFront: the FHIR base it builds links and SMART launch
// URLs on is the API's, not the console's.
const proxy = {
  "/api": { target: apiTarget, changeOrigin: true },
  "/fhir": { target: apiTarget, changeOrigin: true },
};

// A production build names what the page may connect to: itself, the API and the attachments
// bucket (CONSOLE_CONNECT_SRC, space-separated origins). CloudFront's own CSP header covers the
// rest (scripts, styles, frames); a meta tag can only narrow it.
function connectSrcPolicy(): Plugin {
  const origins = [process.env.VITE_API_URL, ...(process.env.CONSOLE_CONNECT_SRC ?? "").split(/\s+/)].filter(
    (origin): origin is string => Boolean(origin && /^https?:\/\/[^\s'";]+$/.test(origin)),
  );
  return {
    name: "carevault-connect-src",
    apply: "build",
    transformIndexHtml: () =>
      origins.length === 0
        ? []
        : [{ tag: "meta", attrs: { "http-equiv": "Content-Security-Policy", content: `connect-src 'self' ${origins.join(" ")}` }, injectTo: "head-prepend" }],
  };
}

export default defineConfig({
  plugins: [connectSrcPolicy()],
  esbuild: { jsx: "automatic" },
  server: { proxy },
  preview: { proxy },
  build: {
    target: "es2022",
    chunkSizeWarningLimit: 1024,
    rollupOptions: {
      onwarn(warning, warn) {
        // Mantine marks its modules "use client" for React Server Components; meaningless here.
        if (warning.code === "MODULE_LEVEL_DIRECTIVE") return;
        warn(warning);
      },
    },
  },
  test: { include: ["src/**/*.test.ts"] },
});
