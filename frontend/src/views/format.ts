/** How API values read on screen. */

import { ApiProblem, NetworkError } from "../api/errors";
import type { Message, MessageStatus } from "../api/types";
import { formatDateTime } from "../time";
import { h } from "./dom";

export const STATUS_LABELS: Record<MessageStatus, string> = {
  scheduled: "Scheduled",
  queued: "Queued",
  sent: "Sent",
  failed: "Failed",
  canceled: "Canceled",
};

/** A status badge: its word carries the meaning, its colour only helps. */
export function statusBadge(status: MessageStatus): HTMLSpanElement {
  return h("span", { class: `status status-${status}` }, STATUS_LABELS[status]);
}

/** "To ann@example.org", "To ann@example.org and 2 more", or "Bcc only". */
export function recipientsSummary(message: Message): string {
  const [first, ...others] = [...message.to, ...message.cc];
  if (first === undefined) return "Bcc only";
  return others.length === 0 ? `To ${first}` : `To ${first} and ${others.length} more`;
}

/** The sentence that explains a failed request to a person. */
export function describeFailure(error: unknown, apiBaseUrl: string): string {
  if (error instanceof NetworkError) {
    return (
      `Could not reach the API at ${apiBaseUrl}. Check your connection ` +
      "(or that the API allows this site's origin), then try again."
    );
  }
  if (error instanceof ApiProblem) {
    const reference = error.requestId ? ` (request id ${error.requestId})` : "";
    return `${error.title ? `${error.title}: ` : ""}${error.detail}${reference}`;
  }
  // Not a request failure: a bug. Say so rather than pretend it was the network.
  return `Unexpected error: ${error instanceof Error ? error.message : String(error)}`;
}

/** The moment that matters for the message's status: "Sends 1 Dec 2026, 09:00", "Sent …". */
export function statusMoment(message: Message, timeZone: string): string {
  const at = (time: string | null): string => formatDateTime(time ?? message.updated_at, timeZone);
  switch (message.status) {
    case "scheduled":
      return `Sends ${at(message.send_at)}`;
    case "queued":
      return `Queued ${at(message.queued_at)}`;
    case "sent":
      return `Sent ${at(message.finished_at)}`;
    case "failed":
      return `Failed ${at(message.finished_at)}`;
    case "canceled":
      return `Canceled ${at(message.updated_at)}`;
  }
}
