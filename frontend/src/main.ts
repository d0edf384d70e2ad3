/** The composition root: reads the real browser, loads the configuration, starts the app. */

import "./styles.css";
import { startApp } from "./app";
import { ConfigError, loadConfig } from "./config";
import { ApiKeyStore } from "./session";
import { browserTimeZone } from "./time";
import { configErrorView } from "./views/simple";

async function boot(root: HTMLElement): Promise<void> {
  try {
    const config = await loadConfig();
    startApp({
      root,
      config,
      keys: new ApiKeyStore(sessionStorage),
      fetch: window.fetch,
      timeZone: browserTimeZone(),
      now: () => new Date(),
      confirm: (question) => window.confirm(question),
      // Needs a secure context (HTTPS or localhost), as the hosting and local runs are.
      newIdempotencyKey: () => crypto.randomUUID(),
    });
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    root.replaceChildren(configErrorView(error.message));
  }
}

const root = document.getElementById("app");
if (root) void boot(root);
