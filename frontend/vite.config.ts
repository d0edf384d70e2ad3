import { defineConfig } from "vitest/config";

export default defineConfig({
  build: {
    outDir: "dist",
    target: "es2022",
    // One small entry chunk: the polyfill would only add bytes for browsers we do not target.
    modulePreload: { polyfill: false },
  },
  test: {
    include: ["tests/**/*.test.ts"],
    // Pure logic runs in Node; DOM tests opt in with `// @vitest-environment jsdom`.
    environment: "node",
    restoreMocks: true,
    // The style sheet as text, for the contrast test of the status badges.
    css: { include: [/styles\.css/] },
  },
});
