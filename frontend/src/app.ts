/**
 * The app shell: header, notices and the current screen. It owns the API key and the
 * address bar; screens get what they need through a ViewContext.
 */

import { HeraldApi } from "./api/client";
import { ApiProblem } from "./api/errors";
import type { Config } from "./config";
import { COMPOSE_PATH, inAppPath, listPath, parseRoute, SUPPRESSIONS_PATH } from "./router";
import type { ApiKeyStore } from "./session";
import { composeView } from "./views/compose";
import { connectView } from "./views/connect";
import { h, setMessage } from "./views/dom";
import { describeFailure } from "./views/format";
import { messageDetailView } from "./views/message-detail";
import { messageListView } from "./views/message-list";
import { notFoundView } from "./views/simple";
import { suppressionsView } from "./views/suppressions";
import type { View, ViewContext } from "./views/view";

/** Everything the app takes from the outside world, so tests can give it fakes. */
export interface AppOptions {
  root: HTMLElement;
  config: Config;
  keys: ApiKeyStore;
  fetch: typeof fetch;
  timeZone: string;
  now(): Date;
  confirm(question: string): boolean;
  newIdempotencyKey(): string;
}

export interface RunningApp {
  stop(): void;
}

export function startApp(options: AppOptions): RunningApp {
  const { config, keys } = options;
  let view: View | null = null;
  // Why the connect screen is shown, when it is not the first visit.
  let connectReason: string | null = null;

  const nav = h(
    "nav",
    { "aria-label": "Main" },
    h("a", { href: listPath() }, "Messages"),
    h("a", { href: COMPOSE_PATH }, "Compose"),
    h("a", { href: SUPPRESSIONS_PATH }, "Suppressions"),
  );
  const disconnect = h("button", { type: "button", class: "button button-quiet" }, "Disconnect");
  const notice = h("p", { class: "notice", role: "status", hidden: true });
  const main = h("main", { id: "main", tabindex: -1 });
  const announcer = h("div", { class: "visually-hidden", "aria-live": "polite" });
  options.root.replaceChildren(
    h("a", { href: "#main", class: "skip-link" }, "Skip to content"),
    h(
      "header",
      { class: "site-header" },
      h("a", { href: listPath(), class: "brand" }, "Herald"),
      nav,
      disconnect,
    ),
    notice,
    main,
    announcer,
  );

  function context(apiKey: string): ViewContext {
    return {
      api: new HeraldApi(config.apiBaseUrl, apiKey, options.fetch),
      timeZone: options.timeZone,
      now: options.now,
      navigate,
      replaceUrl: (path) => history.replaceState(null, "", path),
      announce: (message) => {
        announcer.textContent = message;
      },
      confirm: options.confirm,
      newIdempotencyKey: options.newIdempotencyKey,
      reportFailure(error) {
        // Several requests may fail with the same refused key: go back to connect once.
        if (error instanceof ApiProblem && error.status === 401 && keys.get() !== null) {
          showConnect(
            "Herald no longer accepts your API key (it may have been revoked). Connect again.",
          );
        }
        return describeFailure(error, config.apiBaseUrl);
      },
    };
  }

  async function connect(apiKey: string): Promise<string | null> {
    try {
      // Any authenticated call proves the key; the smallest page is the cheapest one.
      await new HeraldApi(config.apiBaseUrl, apiKey, options.fetch).listMessages({ limit: 1 });
    } catch (error) {
      return error instanceof ApiProblem && error.status === 401
        ? "This key was refused: check that it is complete and has not been revoked."
        : describeFailure(error, config.apiBaseUrl);
    }
    keys.set(apiKey);
    connectReason = null;
    render({ focus: true });
    return null;
  }

  function screen(apiKey: string | null): View {
    if (apiKey === null) {
      return connectView({ apiBaseUrl: config.apiBaseUrl, reason: connectReason, connect });
    }
    const ctx = context(apiKey);
    const route = parseRoute(location.pathname, location.search);
    switch (route.name) {
      case "list":
        return messageListView(ctx, route.status);
      case "message":
        return messageDetailView(ctx, route.id);
      case "compose":
        return composeView(ctx);
      case "suppressions":
        return suppressionsView(ctx);
      case "not-found":
        return notFoundView();
    }
  }

  function render({ focus }: { focus: boolean }): void {
    view?.dispose();
    const apiKey = keys.get();
    view = screen(apiKey);
    nav.hidden = apiKey === null;
    disconnect.hidden = apiKey === null;
    for (const link of nav.querySelectorAll("a")) {
      if (link.pathname === location.pathname) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    document.title = `${view.title} · Herald`;
    main.replaceChildren(view.element);
    // On a first load the browser decides; after a change of screen, start at its heading.
    if (focus) view.heading.focus();
  }

  function navigate(path: string, message?: string): void {
    // Going to where one already is should not add a step for the Back button.
    const here = path === location.pathname + location.search;
    history[here ? "replaceState" : "pushState"](null, "", path);
    setMessage(notice, null);
    render({ focus: true });
    if (message) setMessage(notice, message);
  }

  function onClick(event: MouseEvent): void {
    const path = inAppPath(event, location.origin);
    if (path === null) return;
    event.preventDefault();
    navigate(path);
  }

  function onPopState(): void {
    setMessage(notice, null);
    render({ focus: true });
  }

  function showConnect(reason: string): void {
    keys.clear();
    connectReason = reason;
    setMessage(notice, null);
    render({ focus: true });
  }

  disconnect.addEventListener("click", () =>
    showConnect("Disconnected: the API key is no longer kept in this tab."),
  );
  options.root.addEventListener("click", onClick);
  window.addEventListener("popstate", onPopState);
  render({ focus: false });

  return {
    stop() {
      view?.dispose();
      options.root.removeEventListener("click", onClick);
      window.removeEventListener("popstate", onPopState);
    },
  };
}
