/** One message: its status (followed live until it is final), its times, and cancel. */

import { ApiProblem } from "../api/errors";
import type { Message } from "../api/types";
import { isFinal } from "../api/types";
import { Poller } from "../polling";
import { listPath } from "../router";
import { formatDateTime } from "../time";
import { h, setMessage } from "./dom";
import { STATUS_LABELS, statusBadge } from "./format";
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

  function field(label: string, value: Node | string | null): Node[] {
    return value === null || value === "" ? [] : [h("dt", {}, label), h("dd", {}, value)];
  }

  function time(value: string | null): string | null {
    if (value === null) return null;
    return `${formatDateTime(value, ctx.timeZone, { seconds: true })} (${ctx.timeZone})`;
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
        h("dd", { id: "message-status", tabindex: -1 }, statusBadge(next.status)),
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
      if (!isFinal(loaded.status)) poller.start();
    } catch (error) {
      if (disposed) return;
      setMessage(state, ctx.reportFailure(error));
      retry.hidden = false;
    }
  }

  /** One poll; stops polling once the status can no longer change. */
  async function refresh(): Promise<boolean> {
    try {
      const loaded = await ctx.api.getMessage(id);
      if (disposed || !message) return false;
      const changed = loaded.updated_at !== message.updated_at || loaded.status !== message.status;
      if (changed) {
        if (loaded.status !== message.status) {
          ctx.announce(`Status: ${STATUS_LABELS[loaded.status].toLowerCase()}.`);
        }
        show(loaded);
      }
      if (isFinal(loaded.status)) poller.stop();
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
