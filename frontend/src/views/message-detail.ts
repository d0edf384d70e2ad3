/**
 * One message: its status (followed live until it is final, or for a while once SES has
 * it), its times, what SES reported per recipient and its events, and cancel.
 */

import { ApiProblem } from "../api/errors";
import type { Message, MessageEvent } from "../api/types";
import { awaitsReports } from "../api/types";
import {
  keepsPolling,
  type RecipientRow,
  recipientRows,
  reportFingerprint,
  showsReports,
} from "../delivery-reports";
import { Poller } from "../polling";
import { listPath } from "../router";
import { formatDateTime } from "../time";
import { breakableAddress, h, setMessage } from "./dom";
import {
  eventDetail,
  eventLabel,
  recipientBadge,
  STATUS_EXPLANATIONS,
  STATUS_LABELS,
  statusBadge,
} from "./format";
import type { View, ViewContext } from "./view";

export function messageDetailView(ctx: ViewContext, id: string): View {
  let message: Message | null = null;
  let disposed = false;

  const heading = h("h1", { tabindex: -1 }, "Message");
  const state = h("p", { class: "list-state", role: "status" });
  const retry = h("button", { type: "button", class: "button", hidden: true }, "Try again");
  const details = h("div");
  const bodies = h("div");
  const cancel = h(
    "button",
    { type: "button", class: "button button-danger" },
    "Cancel this email",
  );
  const cancelError = h("p", { class: "field-error", role: "alert", hidden: true });
  const actions = h("div", { class: "actions", hidden: true }, cancel, cancelError);
  const poller = new Poller(refresh);
  // When this page first saw the message awaiting SES's reports: bounds the polling.
  let watchingSince: Date | null = null;

  // Built once and refilled, so a poll never takes the keyboard out of a table.
  const recipientsBody = h("tbody");
  const recipientsNote = h("p", { class: "hint", hidden: true });
  const recipients = section(
    "recipients",
    "Recipients",
    ["Address", "State", "Bounce", "Diagnostic", "When"],
    recipientsBody,
    recipientsNote,
  );
  const eventsBody = h("tbody");
  const events = section("events", "Events", ["When", "Event", "Recipient", "Detail"], eventsBody);

  function field(label: string, value: Node | string | null): Node[] {
    return value === null || value === "" ? [] : [h("dt", {}, label), h("dd", {}, value)];
  }

  function time(value: string | null): string | null {
    if (value === null) return null;
    return `${formatDateTime(value, ctx.timeZone, { seconds: true })} (${ctx.timeZone})`;
  }

  /**
   * A titled table in a region that scrolls sideways on a narrow screen (focusable, so a
   * keyboard can scroll it too), hidden until it has rows.
   */
  function section(
    id: string,
    title: string,
    columns: string[],
    body: HTMLTableSectionElement,
    ...after: Node[]
  ): HTMLElement {
    return h(
      // Not a landmark itself: the scrolling region below is, named by the same heading.
      "section",
      { hidden: true },
      h("h2", { id: `${id}-title` }, title),
      // The zone is said once here: in the "When" heading it would widen the whole column.
      h("p", { id: `${id}-zone`, class: "hint" }, `Times in ${ctx.timeZone}.`),
      h(
        "div",
        { class: "table-scroll", role: "region", "aria-labelledby": `${id}-title`, tabindex: 0 },
        h(
          "table",
          { "aria-labelledby": `${id}-title`, "aria-describedby": `${id}-zone` },
          h(
            "thead",
            {},
            h("tr", {}, ...columns.map((column) => h("th", { scope: "col" }, column))),
          ),
          body,
        ),
      ),
      ...after,
    );
  }

  function when(value: string): HTMLTimeElement {
    return h("time", { datetime: value }, formatDateTime(value, ctx.timeZone, { seconds: true }));
  }

  function recipientRow({ address, report }: RecipientRow): HTMLTableRowElement {
    if (report === null) {
      return h(
        "tr",
        {},
        h("th", { scope: "row" }, breakableAddress(address)),
        h("td", {}, "No report yet"),
        h("td"),
        h("td"),
        h("td"),
      );
    }
    const bounce = [report.bounce_type, report.bounce_subtype].filter(Boolean).join(" · ");
    return h(
      "tr",
      {},
      h("th", { scope: "row" }, breakableAddress(address)),
      h("td", {}, recipientBadge(report.status)),
      h("td", {}, bounce),
      h("td", {}, report.diagnostic ?? ""),
      h("td", {}, when(report.updated_at)),
    );
  }

  function eventRow(event: MessageEvent): HTMLTableRowElement {
    return h(
      "tr",
      {},
      h("td", {}, when(event.occurred_at)),
      h("td", {}, eventLabel(event.type)),
      h("td", {}, event.recipient === null ? "" : breakableAddress(event.recipient)),
      h("td", {}, eventDetail(event.detail)),
    );
  }

  function showReports(next: Message): void {
    recipients.hidden = !showsReports(next);
    recipientsBody.replaceChildren(...recipientRows(next).map(recipientRow));
    events.hidden = next.events.length === 0;
    eventsBody.replaceChildren(...next.events.map(eventRow));
    setMessage(recipientsNote, reportsNote(next));
  }

  /** Says so when the page stopped looking for reports SES may still send. */
  function reportsNote(next: Message): string | null {
    if (!awaitsReports(next.status) || keepsLooking(next)) return null;
    return next.status === "sent"
      ? "No report from the recipients' mail servers yet. This page has stopped checking: reload it to look again."
      : "A later report (such as a complaint) can still come. This page has stopped checking: reload it to look again.";
  }

  /** Whether to keep polling (delivery-reports.ts says how long); starts the watch. */
  function keepsLooking(next: Message): boolean {
    const now = ctx.now();
    if (awaitsReports(next.status)) watchingSince ??= now;
    return keepsPolling(next, now, watchingSince ?? now);
  }

  function show(next: Message): void {
    message = next;
    heading.textContent = next.subject;
    setMessage(state, null);
    actions.hidden = next.status !== "scheduled";
    details.replaceChildren(
      h(
        "dl",
        { class: "fields" },
        h("dt", {}, "Status"),
        h(
          "dd",
          {},
          h("span", { id: "message-status", tabindex: -1 }, statusBadge(next.status)),
          " ",
          h("span", { class: "status-explanation" }, STATUS_EXPLANATIONS[next.status]),
        ),
        ...field("Error", next.error),
        ...field("From", next.sender),
        ...field("To", next.to.join(", ")),
        ...field("Cc", next.cc.join(", ")),
        ...field("Bcc", next.bcc.join(", ")),
        ...field("Reply to", next.reply_to.join(", ")),
        ...field("Send at", time(next.send_at)),
        ...field("Created", time(next.created_at)),
        ...field("Queued", time(next.queued_at)),
        ...field("Finished", time(next.finished_at)),
        ...field("Provider message id", next.provider_message_id),
        ...field("Message id", next.id),
      ),
    );
    showReports(next);
    bodies.replaceChildren(
      ...body("Text", next.text),
      // Shown as source: rendering it would run the sender's markup in this page.
      ...body("HTML (source)", next.html),
    );
  }

  function body(label: string, content: string | null): Node[] {
    return content === null ? [] : [h("h2", {}, label), h("pre", { class: "body" }, content)];
  }

  async function load(): Promise<void> {
    setMessage(state, "Loading the message…");
    retry.hidden = true;
    try {
      const loaded = await ctx.api.getMessage(id);
      if (disposed) return;
      show(loaded);
      if (keepsLooking(loaded)) poller.start();
    } catch (error) {
      if (disposed) return;
      setMessage(state, ctx.reportFailure(error));
      retry.hidden = false;
    }
  }

  /** One poll; stops polling once the status can no longer change, or SES's window is past. */
  async function refresh(): Promise<boolean> {
    try {
      const loaded = await ctx.api.getMessage(id);
      if (disposed || !message) return false;
      const changed = reportFingerprint(loaded) !== reportFingerprint(message);
      if (loaded.status !== message.status) {
        ctx.announce(`Status: ${STATUS_LABELS[loaded.status].toLowerCase()}.`);
      }
      const keepGoing = keepsLooking(loaded);
      if (!keepGoing) poller.stop();
      // Shown after deciding, so the note says whether the page still checks.
      if (changed || !keepGoing) show(loaded);
      return changed;
    } catch (error) {
      if (!disposed) setMessage(state, `Live status paused: ${ctx.reportFailure(error)}`);
      return false;
    }
  }

  async function cancelMessage(): Promise<void> {
    if (!message || !ctx.confirm(`Cancel “${message.subject}”? It will not be sent.`)) return;
    cancel.disabled = true;
    cancel.textContent = "Canceling…";
    setMessage(cancelError, null);
    try {
      const canceled = await ctx.api.cancelMessage(id);
      if (disposed) return;
      poller.stop();
      show(canceled);
      ctx.announce("The email is canceled.");
    } catch (error) {
      if (disposed) return;
      setMessage(cancelError, ctx.reportFailure(error));
      // A 409: it was queued or sent meanwhile. Show what it is now.
      if (error instanceof ApiProblem && error.status === 409) await refresh();
    } finally {
      cancel.disabled = false;
      cancel.textContent = "Cancel this email";
    }
    // Once the button is hidden, keep the keyboard on the status that replaced it.
    if (actions.hidden) document.getElementById("message-status")?.focus();
  }

  retry.addEventListener("click", () => void load());
  cancel.addEventListener("click", () => void cancelMessage());
  const element = h(
    "div",
    { class: "view" },
    h("p", {}, h("a", { href: listPath() }, "← All messages")),
    heading,
    state,
    retry,
    details,
    actions,
    recipients,
    events,
    bodies,
  );
  void load();
  return {
    title: "Message",
    element,
    heading,
    dispose() {
      disposed = true;
      poller.stop();
    },
  };
}
