/** How API values read on screen. */

import { ApiProblem, NetworkError } from "../api/errors";
import type { MessageStatus, MessageSummary, RecipientStatus } from "../api/types";
import { formatDateTime } from "../time";
import { h } from "./dom";

export const STATUS_LABELS: Record<MessageStatus, string> = {
  scheduled: "Scheduled",
  queued: "Queued",
  sent: "Sent",
  delivered: "Delivered",
  bounced: "Bounced",
  complained: "Complained",
  failed: "Failed",
  canceled: "Canceled",
};

/** What each status means, for the message's page: the badge's one word, explained. */
export const STATUS_EXPLANATIONS: Record<MessageStatus, string> = {
  scheduled: "Herald will hand it to SES at its send time.",
  queued: "It is on its way to SES.",
  sent: "SES accepted it; the recipients' mail servers have not all answered yet.",
  delivered: "Every recipient's mail server accepted it.",
  bounced: "At least one recipient's mail server refused it.",
  complained: "At least one recipient marked it as spam.",
  failed: "It could not be sent.",
  canceled: "It was canceled before it was sent.",
};

export const RECIPIENT_STATUS_LABELS: Record<RecipientStatus, string> = {
  delivered: "Delivered",
  bounced: "Bounced",
  complained: "Complained",
  rejected: "Rejected",
  delayed: "Delayed",
};

/** A status badge: its word carries the meaning, its colour only helps. */
export function statusBadge(status: MessageStatus): HTMLSpanElement {
  return h("span", { class: `status status-${status}` }, STATUS_LABELS[status]);
}

/** A recipient's badge, coloured as the message status of the same name. */
export function recipientBadge(status: RecipientStatus): HTMLSpanElement {
  return h("span", { class: `status status-${status}` }, RECIPIENT_STATUS_LABELS[status]);
}

/** SES's event types (eventType) in words; an unknown one reads as SES wrote it. */
const EVENT_LABELS: Record<string, string> = {
  Send: "Accepted by SES",
  Delivery: "Delivered",
  Bounce: "Bounced",
  Complaint: "Complained (marked as spam)",
  Reject: "Rejected by SES",
  DeliveryDelay: "Delivery delayed",
  "Rendering Failure": "Rendering failed",
};

export function eventLabel(type: string): string {
  return EVENT_LABELS[type] ?? type;
}

/**
 * An event's detail in one line: `{"bounceType": "Permanent", "bouncedRecipients":
 * [{"emailAddress": "a@x.org", "diagnosticCode": "smtp; 550"}]}` -> "bounce type: Permanent;
 * bounced recipients: a@x.org (diagnostic code: smtp; 550)".
 */
export function eventDetail(detail: Record<string, unknown>): string {
  return Object.entries(detail)
    .map(([key, value]) => [words(key), detailValue(value)])
    .filter(([, text]) => text !== "")
    .map(([key, text]) => `${key}: ${text}`)
    .join("; ");
}

/** A value inside an event's detail: a list joined, an object as its first value (the rest). */
function detailValue(value: unknown): string {
  if (Array.isArray(value)) return value.map(detailValue).filter(Boolean).join(", ");
  if (value === null || value === undefined) return "";
  if (typeof value !== "object") return String(value);
  const [first, ...rest] = Object.entries(value).filter(([, item]) => detailValue(item) !== "");
  if (first === undefined) return "";
  const more = rest.map(([key, item]) => `${words(key)}: ${detailValue(item)}`).join(", ");
  return more === "" ? detailValue(first[1]) : `${detailValue(first[1])} (${more})`;
}

/** "diagnosticCode" or "bounce_type" -> "diagnostic code", "bounce type". */
function words(key: string): string {
  return key
    .replace(/_/g, " ")
    .replace(/([a-z0-9])([A-Z])/g, "$1 $2")
    .toLowerCase();
}

/** "To ann@example.org", "To ann@example.org and 2 more", or "Bcc only". */
export function recipientsSummary(message: MessageSummary): string {
  const [first, ...others] = [...message.to, ...message.cc];
  if (first === undefined) return "Bcc only";
  return others.length === 0 ? `To ${first}` : `To ${first} and ${others.length} more`;
}

/**
 * The sentences that explain a failed request to a person. The API's `detail` is written
 * for the developer calling it ("send an active API key as 'Authorization: Bearer
 * <key>'"), so the common answers get words of their own; the field list of a 422 is
 * shown next to the fields by the form, never here.
 */
export function describeFailure(error: unknown, apiBaseUrl: string): string {
  if (error instanceof NetworkError) {
    return (
      `Could not reach the API at ${apiBaseUrl}. Check your connection ` +
      "(or that the API allows this site's origin), then try again."
    );
  }
  if (error instanceof ApiProblem) return describeProblem(error);
  // Not a request failure: a bug. Say so rather than pretend it was the network.
  return `Unexpected error: ${error instanceof Error ? error.message : String(error)}`;
}

function describeProblem(problem: ApiProblem): string {
  const wait = problem.retryAfterSeconds;
  switch (problem.status) {
    case 400:
      return "Herald could not read this request. Reload the page and try again.";
    case 401:
      return "Herald did not accept this API key: check that it is complete and has not been revoked.";
    case 403:
      return "This API key is not allowed to do that.";
    case 404:
      return "Herald has no such message for this API key: it may belong to another key, or the link may be wrong.";
    case 409:
      return problem.kind === "not-cancelable"
        ? "It is too late to cancel this email: it is no longer scheduled."
        : "This changed meanwhile: reload the page to see it as it is now.";
    case 413:
      return "This email is too large to send. Shorten the text or the HTML, then send it again.";
    case 422:
      if (problem.kind === "recipient-suppressed") return describeSuppressed(problem);
      return problem.kind === "idempotency-key-reused"
        ? "An earlier version of this email already reached Herald: check the messages before sending it again."
        : "Herald did not accept some of the fields: see the messages next to them.";
    case 429:
      return problem.kind === "quota-exceeded"
        ? `Your account has sent its daily quota of emails. ${tryAgain(wait, "tomorrow (the quota restarts at midnight UTC)")}`
        : `Too many requests in a short time. ${tryAgain(wait, "in a few seconds")}`;
    case 503:
      return `Herald is busy right now. ${tryAgain(wait, "in a few seconds")}`;
  }
  const reference = problem.requestId
    ? ` If it keeps happening, give this reference to whoever runs Herald: ${problem.requestId}.`
    : "";
  if (problem.status >= 500) {
    return `Something went wrong inside Herald. Try again in a moment.${reference}`;
  }
  return `${sentence(problem.detail)}${reference}`;
}

/** Names the suppressed addresses, and what to do about them. */
function describeSuppressed(problem: ApiProblem): string {
  const addresses = problem.suppressed;
  if (addresses.length === 0) return sentence(problem.detail);
  const one = addresses.length === 1;
  return (
    `Herald did not schedule this email: ${addresses.join(", ")} ${one ? "is" : "are"} on ` +
    `your suppression list (an earlier email bounced or was marked as spam). Remove ` +
    `${one ? "it" : "them"} from the email, or from the list under Suppressions, then send again.`
  );
}

/** "Try again in 30 seconds.", or the fallback when the answer said nothing (or hid it). */
function tryAgain(seconds: number | null, fallback: string): string {
  return `Try again ${seconds === null ? fallback : `in ${duration(seconds)}`}.`;
}

/** 1 -> "1 second", 90 -> "2 minutes", 18_000 -> "5 hours", 19_000 -> "5 hours 17 minutes". */
export function duration(seconds: number): string {
  const plural = (count: number, unit: string): string =>
    `${count} ${unit}${count === 1 ? "" : "s"}`;
  if (seconds < 60) return plural(Math.max(1, Math.ceil(seconds)), "second");
  const minutes = Math.ceil(seconds / 60);
  if (minutes < 60) return plural(minutes, "minute");
  const hours = Math.floor(minutes / 60);
  const rest = minutes % 60;
  return rest === 0 ? plural(hours, "hour") : `${plural(hours, "hour")} ${plural(rest, "minute")}`;
}

/** "no such route" -> "No such route." */
function sentence(text: string): string {
  const trimmed = text.trim();
  const capital = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(capital) ? capital : `${capital}.`;
}

/** The moment that matters for the message's status: "Sends 1 Dec 2026, 09:00", "Sent …". */
export function statusMoment(message: MessageSummary, timeZone: string): string {
  const at = (time: string | null): string => formatDateTime(time ?? message.updated_at, timeZone);
  switch (message.status) {
    case "scheduled":
      return `Sends ${at(message.send_at)}`;
    case "queued":
      return `Queued ${at(message.queued_at)}`;
    case "sent":
      return `Sent ${at(message.finished_at)}`;
    // SES's report is the message's last change.
    case "delivered":
      return `Delivered ${at(message.updated_at)}`;
    case "bounced":
      return `Bounced ${at(message.updated_at)}`;
    case "complained":
      return `Complained ${at(message.updated_at)}`;
    case "failed":
      return `Failed ${at(message.finished_at)}`;
    case "canceled":
      return `Canceled ${at(message.updated_at)}`;
  }
}
