/** The messages, newest first: live status, a status filter, and "load more". */

import type { MessageStatus, MessageSummary } from "../api/types";
import { isMessageStatus, MESSAGE_STATUSES } from "../api/types";
import { Poller } from "../polling";
import { COMPOSE_PATH, listPath, messagePath } from "../router";
import { h, setMessage } from "./dom";
import { recipientsSummary, STATUS_LABELS, statusBadge, statusMoment } from "./format";
import type { View, ViewContext } from "./view";

const PAGE_SIZE = 20;
/** The API's largest page: polling refreshes at most this many of the loaded messages. */
const MAX_PAGE_SIZE = 100;

export function messageListView(ctx: ViewContext, initialStatus: MessageStatus | null): View {
  let status = initialStatus;
  let items: MessageSummary[] = [];
  let nextCursor: string | null = null;
  // Bumped by every change of the list, so that an answer to an older request is dropped.
  let version = 0;
  let disposed = false;

  const heading = h("h1", { id: "list-title", tabindex: -1 }, "Messages");
  const filter = h(
    "select",
    { id: "status-filter" },
    h("option", { value: "" }, "All"),
    ...MESSAGE_STATUSES.map((value) =>
      h("option", { value, selected: value === status }, STATUS_LABELS[value]),
    ),
  );
  const state = h("p", { class: "list-state", role: "status" });
  const retry = h("button", { type: "button", class: "button", hidden: true }, "Try again");
  const list = h("ul", { class: "message-list", "aria-labelledby": "list-title" });
  const more = h("button", { type: "button", class: "button", hidden: true }, "Load more");
  const moreError = h("p", { class: "field-error", role: "alert", hidden: true });
  const live = h("p", { class: "hint" });
  const poller = new Poller(refresh);

  function row(message: MessageSummary): HTMLLIElement {
    return h(
      "li",
      {},
      h(
        "a",
        { href: messagePath(message.id), class: "message-link", "data-id": message.id },
        // The spaces keep the link's accessible name readable: "Hello Sent To …".
        h("span", { class: "message-subject" }, message.subject),
        " ",
        statusBadge(message.status),
        " ",
        h(
          "span",
          { class: "message-meta" },
          `${recipientsSummary(message)} · ${statusMoment(message, ctx.timeZone)}`,
        ),
      ),
    );
  }

  function linkOf(id: string | undefined): HTMLAnchorElement | undefined {
    return [...list.querySelectorAll("a")].find((link) => link.dataset["id"] === id);
  }

  function show(next: MessageSummary[], cursor: string | null): void {
    // Rows are rebuilt, so a focused row is focused again once rebuilt.
    const focused = document.activeElement;
    const focusedId =
      focused instanceof HTMLAnchorElement && list.contains(focused) ? focused.dataset["id"] : null;
    items = next;
    nextCursor = cursor;
    list.replaceChildren(...items.map(row));
    more.hidden = nextCursor === null;
    if (items.length > 0) setMessage(state, null);
    else if (status) setMessage(state, `No ${STATUS_LABELS[status].toLowerCase()} messages.`);
    else setMessage(state, "No messages yet. Compose one to get started.");
    if (focusedId) linkOf(focusedId)?.focus();
  }

  function markLive(): void {
    live.textContent = `Live status, updated at ${ctx.now().toLocaleTimeString(undefined, { timeZone: ctx.timeZone })}.`;
  }

  async function load(): Promise<void> {
    poller.stop();
    const started = ++version;
    show([], null);
    setMessage(state, "Loading messages…");
    retry.hidden = true;
    list.setAttribute("aria-busy", "true");
    try {
      const page = await ctx.api.listMessages({ status, limit: PAGE_SIZE });
      if (disposed || started !== version) return;
      show(page.items, page.next_cursor);
      markLive();
      poller.start();
    } catch (error) {
      if (disposed || started !== version) return;
      setMessage(state, ctx.reportFailure(error));
      retry.hidden = false;
    } finally {
      list.removeAttribute("aria-busy");
    }
  }

  /** One poll: reloads the loaded messages from the top; resolves to whether any changed. */
  async function refresh(): Promise<boolean> {
    const started = version;
    const limit = Math.min(Math.max(items.length, PAGE_SIZE), MAX_PAGE_SIZE);
    try {
      const page = await ctx.api.listMessages({ status, limit });
      if (disposed || started !== version) return false;
      markLive();
      // Past the largest page, the oldest loaded messages keep their last known state.
      const fresh = new Set(page.items.map((message) => message.id));
      const tail = items.slice(MAX_PAGE_SIZE).filter((message) => !fresh.has(message.id));
      const next = [...page.items, ...tail];
      if (fingerprint(next) === fingerprint(items)) return false;
      announceChanges(items, next);
      version++;
      show(next, tail.length > 0 ? nextCursor : page.next_cursor);
      return true;
    } catch (error) {
      if (disposed || started !== version) return false;
      live.textContent = `Live status paused: ${ctx.reportFailure(error)} Retrying by itself.`;
      return false;
    }
  }

  function announceChanges(before: MessageSummary[], after: MessageSummary[]): void {
    const previous = new Map(before.map((message) => [message.id, message.status]));
    const changes = after
      .filter((message) => previous.has(message.id) && previous.get(message.id) !== message.status)
      .map(
        (message) => `“${message.subject}” is now ${STATUS_LABELS[message.status].toLowerCase()}.`,
      );
    if (changes.length > 0) ctx.announce(changes.join(" "));
  }

  async function loadMore(): Promise<void> {
    if (nextCursor === null) return;
    const started = ++version;
    more.disabled = true;
    more.textContent = "Loading…";
    setMessage(moreError, null);
    try {
      const page = await ctx.api.listMessages({ status, cursor: nextCursor, limit: PAGE_SIZE });
      if (disposed || started !== version) return;
      const known = new Set(items.map((message) => message.id));
      const added = page.items.filter((message) => !known.has(message.id));
      version++;
      show([...items, ...added], page.next_cursor);
      ctx.announce(`${added.length} more messages loaded.`);
      // Continue where the new rows start; the button may be gone now that all are loaded.
      (linkOf(added[0]?.id) ?? linkOf(items.at(-1)?.id))?.focus();
    } catch (error) {
      if (disposed || started !== version) return;
      setMessage(moreError, ctx.reportFailure(error));
    } finally {
      more.disabled = false;
      more.textContent = "Load more";
    }
  }

  filter.addEventListener("change", () => {
    status = isMessageStatus(filter.value) ? filter.value : null;
    ctx.replaceUrl(listPath(status));
    void load();
  });
  retry.addEventListener("click", () => void load());
  more.addEventListener("click", () => void loadMore());

  const element = h(
    "div",
    { class: "view" },
    h(
      "div",
      { class: "view-header" },
      heading,
      h("a", { href: COMPOSE_PATH, class: "button button-primary" }, "Compose"),
    ),
    h(
      "div",
      { class: "field field-inline" },
      h("label", { for: "status-filter" }, "Status"),
      filter,
    ),
    state,
    retry,
    list,
    more,
    moreError,
    live,
  );
  void load();
  return {
    title: "Messages",
    element,
    heading,
    dispose() {
      disposed = true;
      poller.stop();
    },
  };
}

/** What polling compares: a message changed when its status or its update time did. */
function fingerprint(messages: MessageSummary[]): string {
  return messages.map((message) => `${message.id} ${message.status} ${message.updated_at}`).join();
}
