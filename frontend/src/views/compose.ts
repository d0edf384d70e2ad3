/** Write an email and send it now or at a local date and time. */

import { ApiProblem } from "../api/errors";
import type { MessageDraft } from "../api/types";
import {
  COMPOSE_FIELDS,
  type ComposeField,
  type ComposeInput,
  type FieldMessages,
  messagesForSuppressed,
  messagesFromFieldErrors,
  unplacedFieldErrors,
  validateCompose,
} from "../compose-form";
import { listPath } from "../router";
import {
  formatDateTime,
  parseLocalDateTime,
  timeZoneLabel,
  toLocalDateTimeValue,
  zonedDateTime,
} from "../time";
import { h, setMessage } from "./dom";
import type { View, ViewContext } from "./view";

type Control = HTMLInputElement | HTMLTextAreaElement;

const HOUR_MS = 3_600_000;

export function composeView(ctx: ViewContext): View {
  // One key per email being composed: a double click, or a retry after a lost answer,
  // returns the first message instead of scheduling a second one.
  let idempotencyKey = ctx.newIdempotencyKey();
  let disposed = false;

  const heading = h("h1", { tabindex: -1 }, "Compose an email");
  const summary = h("p", { class: "notice notice-error", role: "alert", hidden: true });
  const controls: Record<ComposeField, Control> = {
    to: h("textarea", { id: "to", rows: 2 }),
    cc: h("textarea", { id: "cc", rows: 1 }),
    bcc: h("textarea", { id: "bcc", rows: 1 }),
    subject: h("input", { id: "subject", type: "text" }),
    text: h("textarea", { id: "text", rows: 8 }),
    html: h("textarea", { id: "html", rows: 4 }),
    sendAt: h("input", {
      id: "send-at",
      type: "datetime-local",
      min: toLocalDateTimeValue(ctx.now(), ctx.timeZone),
      disabled: true,
    }),
  };
  const errors = new Map<ComposeField, HTMLElement>();
  const sendNow = h("input", {
    id: "send-now",
    type: "radio",
    name: "when",
    value: "now",
    checked: true,
  });
  const sendLater = h("input", { id: "send-later", type: "radio", name: "when", value: "later" });
  const zone = h("p", { id: "send-at-zone", class: "hint" });
  const send = h("button", { type: "submit", class: "button button-primary" }, "Send");

  /** A labelled control with its hint and its error, which screen readers read with it. */
  function field(name: ComposeField, label: string, hint: HTMLElement | null = null): HTMLElement {
    const control = controls[name];
    const error = h("p", { id: `${control.id}-error`, class: "field-error", hidden: true });
    errors.set(name, error);
    control.name = name;
    control.setAttribute("aria-describedby", [hint?.id, error.id].filter(Boolean).join(" "));
    return h(
      "div",
      { class: "field" },
      h("label", { for: control.id }, label),
      hint,
      control,
      error,
    );
  }

  function showErrors(messages: FieldMessages, problem: string | null): void {
    for (const name of COMPOSE_FIELDS) {
      const message = messages[name] ?? null;
      const error = errors.get(name);
      if (error) setMessage(error, message);
      if (message) controls[name].setAttribute("aria-invalid", "true");
      else controls[name].removeAttribute("aria-invalid");
    }
    setMessage(summary, problem);
    const first = COMPOSE_FIELDS.find((name) => messages[name]);
    if (first) controls[first].focus();
  }

  function showZone(): void {
    const wall = parseLocalDateTime(controls.sendAt.value);
    const zoned = wall ? zonedDateTime(wall, ctx.timeZone) : null;
    // The offset is the chosen date's (summer or winter time), not today's.
    zone.textContent = `Time zone: ${timeZoneLabel(ctx.timeZone, zoned?.instant ?? ctx.now())}`;
  }

  function onWhenChange(): void {
    controls.sendAt.disabled = !sendLater.checked;
    if (sendLater.checked && controls.sendAt.value === "") {
      // Start from the next full hour: a sensible default that is always in the future.
      const inAnHour = toLocalDateTimeValue(new Date(ctx.now().getTime() + HOUR_MS), ctx.timeZone);
      controls.sendAt.value = `${inAnHour.slice(0, -2)}00`;
      showZone();
    }
  }

  function input(): ComposeInput {
    return {
      to: controls.to.value,
      cc: controls.cc.value,
      bcc: controls.bcc.value,
      subject: controls.subject.value,
      text: controls.text.value,
      html: controls.html.value,
      sendLater: sendLater.checked,
      sendAt: controls.sendAt.value,
    };
  }

  async function submit(): Promise<void> {
    // Enter in a field submits too; the first request's key covers a double submit anyway.
    if (send.disabled) return;
    const result = validateCompose(input(), { timeZone: ctx.timeZone, now: ctx.now() });
    if (!result.ok) {
      showErrors(result.errors, "The email is not ready: see the fields marked below.");
      return;
    }
    showErrors({}, null);
    send.disabled = true;
    send.textContent = "Sending…";
    try {
      const { message, replayed } = await ctx.api.createMessage(result.draft, idempotencyKey);
      if (disposed) return;
      const when = result.sendAt
        ? `is scheduled for ${formatDateTime(message.send_at, ctx.timeZone)} (${ctx.timeZone})`
        : "is on its way";
      ctx.navigate(
        listPath(),
        `${replayed ? "Herald already had this email: " : ""}“${message.subject}” ${when}.`,
      );
    } catch (error) {
      if (disposed) return;
      showFailure(error, result.draft);
    } finally {
      send.disabled = false;
      send.textContent = "Send";
    }
  }

  function showFailure(error: unknown, draft: MessageDraft): void {
    const explanation = ctx.reportFailure(error);
    if (!(error instanceof ApiProblem) || error.status >= 500) {
      // The email may have been stored before the answer was lost: the same key makes a
      // retry return it instead of scheduling it again.
      showErrors({}, `${explanation} If you send again, it will not be sent twice.`);
      return;
    }
    // The API refused this body, so a corrected one is a new request and needs a new key
    // (the same key with another body is refused as a reuse).
    idempotencyKey = ctx.newIdempotencyKey();
    const placed =
      error.kind === "recipient-suppressed"
        ? messagesForSuppressed(error.suppressed, draft)
        : messagesFromFieldErrors(error.errors, draft);
    const unplaced = unplacedFieldErrors(error.errors);
    // Each field's message is shown once, next to it; the summary only points there (and
    // says what no field of the form can show).
    let summaryText = explanation;
    if (error.kind === "validation-error" && Object.keys(placed).length === 0) {
      summaryText = "Herald did not accept this email.";
    }
    if (unplaced.length > 0) summaryText = `${summaryText} ${unplaced.join(" ")}`;
    showErrors(placed, summaryText);
  }

  sendNow.addEventListener("change", onWhenChange);
  sendLater.addEventListener("change", onWhenChange);
  controls.sendAt.addEventListener("input", showZone);
  showZone();

  const form = h(
    "form",
    { novalidate: true },
    field(
      "to",
      "To",
      h("p", { id: "to-hint", class: "hint" }, "Addresses separated by commas or new lines."),
    ),
    field("cc", "Cc"),
    field("bcc", "Bcc"),
    field("subject", "Subject"),
    field("text", "Text"),
    field("html", "HTML (optional)"),
    h(
      "fieldset",
      { class: "field" },
      h("legend", {}, "When to send"),
      h("div", { class: "choice" }, sendNow, h("label", { for: "send-now" }, "Now")),
      h(
        "div",
        { class: "choice" },
        sendLater,
        h("label", { for: "send-later" }, "At a date and time"),
      ),
      field("sendAt", "Date and time", zone),
    ),
    h("div", { class: "actions" }, send),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void submit();
  });

  return {
    title: "Compose",
    element: h("div", { class: "view" }, heading, summary, form),
    heading,
    dispose() {
      disposed = true;
    },
  };
}
