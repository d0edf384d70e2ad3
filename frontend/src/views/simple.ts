/** Screens with nothing to load: an unknown address, and an app that cannot start. */

import { CONFIG_PATH } from "../config";
import { listPath } from "../router";
import { h } from "./dom";
import type { View } from "./view";

export function notFoundView(): View {
  const heading = h("h1", { tabindex: -1 }, "Page not found");
  const element = h(
    "div",
    { class: "view" },
    heading,
    h(
      "p",
      {},
      "There is nothing at this address. ",
      h("a", { href: listPath() }, "See all messages"),
      ".",
    ),
  );
  return { title: "Not found", element, heading, dispose: () => undefined };
}

/** Shown instead of the app when /config.json is missing or wrong: no API, nothing to do. */
export function configErrorView(reason: string): HTMLElement {
  return h(
    "main",
    { class: "view" },
    h("h1", {}, "Herald cannot start"),
    h("p", { class: "notice notice-error", role: "alert" }, reason),
    h(
      "p",
      {},
      `This site reads the address of its API from ${CONFIG_PATH}, which should look like `,
      h("code", {}, '{"apiBaseUrl": "https://api.example.com"}'),
      ". The deployment writes it; if you run the site yourself, add it next to index.html.",
    ),
  );
}
