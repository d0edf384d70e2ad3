/**
 * The app's addresses. Real paths (the history API, not #fragments) so that a message can
 * be linked to; the hosting answers every unknown path with index.html.
 */

import { isMessageStatus, type MessageStatus } from "./api/types";

export type Route =
  | { name: "list"; status: MessageStatus | null }
  | { name: "message"; id: string }
  | { name: "compose" }
  | { name: "suppressions" }
  | { name: "not-found" };

export const COMPOSE_PATH = "/compose";
export const SUPPRESSIONS_PATH = "/suppressions";

export function listPath(status: MessageStatus | null = null): string {
  return status ? `/?status=${status}` : "/";
}

export function messagePath(id: string): string {
  return `/messages/${encodeURIComponent(id)}`;
}

export function parseRoute(pathname: string, search: string): Route {
  if (pathname === "/") {
    const status = new URLSearchParams(search).get("status");
    return { name: "list", status: status && isMessageStatus(status) ? status : null };
  }
  if (pathname === COMPOSE_PATH) return { name: "compose" };
  if (pathname === SUPPRESSIONS_PATH) return { name: "suppressions" };
  const message = /^\/messages\/([^/]+)$/.exec(pathname);
  if (message?.[1]) return { name: "message", id: decodeURIComponent(message[1]) };
  return { name: "not-found" };
}

/**
 * The in-app path a click on this link should go to without a page load, or null when
 * the browser should handle it: modified clicks (new tab), other origins, downloads,
 * targets, and in-page #fragments.
 */
export function inAppPath(event: MouseEvent, origin: string): string | null {
  if (event.defaultPrevented || event.button !== 0) return null;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return null;
  const link = event.target instanceof Element ? event.target.closest("a") : null;
  if (!link || link.target || link.hasAttribute("download")) return null;
  const href = link.getAttribute("href");
  if (!href || href.startsWith("#")) return null;
  const url = new URL(link.href);
  return url.origin === origin ? url.pathname + url.search : null;
}
