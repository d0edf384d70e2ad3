/** The API's bodies, as ecs_service/api/schemas.py and problems.py define them. */

export const MESSAGE_STATUSES = [
  "scheduled",
  "queued",
  "sent",
  "delivered",
  "bounced",
  "complained",
  "failed",
  "canceled",
] as const;

/**
 * scheduled -> queued -> sent | failed, or scheduled -> canceled. Once sent, SES's reports
 * summarise it: `complained` if any recipient complained, else `bounced` if any bounced,
 * else `delivered` once every recipient was delivered, else still `sent`.
 */
export type MessageStatus = (typeof MESSAGE_STATUSES)[number];

export function isMessageStatus(value: string): value is MessageStatus {
  return (MESSAGE_STATUSES as readonly string[]).includes(value);
}

/** A status that will not change any more: polling for it is pointless. */
export function isFinal(status: MessageStatus): boolean {
  return status === "complained" || status === "failed" || status === "canceled";
}

/**
 * A status SES may still change with a later report: `sent` (no report yet), `delivered`
 * (a complaint can follow a delivery) and `bounced` (another recipient may still complain).
 */
export function awaitsReports(status: MessageStatus): boolean {
  return status === "sent" || status === "delivered" || status === "bounced";
}

/** What SES last reported for one recipient; the strongest report wins. */
export const RECIPIENT_STATUSES = [
  "delivered",
  "bounced",
  "complained",
  "rejected",
  "delayed",
] as const;
export type RecipientStatus = (typeof RECIPIENT_STATUSES)[number];

/** One recipient SES has reported on (RecipientOut). Recipients without a report are absent. */
export interface RecipientReport {
  address: string;
  status: RecipientStatus;
  /** SES's bounceType: Permanent, Transient or Undetermined. */
  bounce_type: string | null;
  /** SES's bounceSubType, such as General or OnAccountSuppressionList. */
  bounce_subtype: string | null;
  /** The receiving server's answer, such as "smtp; 550 5.1.1 user unknown". */
  diagnostic: string | null;
  /** When SES saw what it reported. */
  updated_at: string;
}

/** One SES event about a message (EventOut), oldest first in a message. */
export interface MessageEvent {
  /** SES's eventType: Send, Delivery, Bounce, Complaint, Reject, DeliveryDelay, … */
  type: string;
  recipient: string | null;
  occurred_at: string;
  /** The event's own fields (bounceType, diagnosticCode, smtpResponse, …); small. */
  detail: Record<string, unknown>;
}

/** The body of POST /v1/messages (MessageCreate). */
export interface MessageDraft {
  to: string[];
  cc: string[];
  bcc: string[];
  subject: string;
  text: string | null;
  html: string | null;
  /** RFC 3339 with an offset; omitted to send now. */
  send_at?: string;
}

/** A message and where it is in its life (MessageOut). Times are RFC 3339 strings. */
export interface Message {
  id: string;
  status: MessageStatus;
  sender: string;
  to: string[];
  cc: string[];
  bcc: string[];
  reply_to: string[];
  subject: string;
  text: string | null;
  html: string | null;
  send_at: string;
  created_at: string;
  updated_at: string;
  queued_at: string | null;
  finished_at: string | null;
  provider_message_id: string | null;
  error: string | null;
  /** What SES reported per recipient (POST and cancel answer it empty, a replay the real one). */
  recipients: RecipientReport[];
  /** SES's latest 100 events about it, oldest first (empty from POST and cancel, as above). */
  events: MessageEvent[];
}

/**
 * A message as a list page gives it (MessageSummary): everything but the bodies and the
 * reports, which keep a page small; GET /v1/messages/{id} has them.
 */
export type MessageSummary = Omit<Message, "text" | "html" | "recipients" | "events">;

/** One page of GET /v1/messages, newest first (MessagePage). */
export interface MessagePage {
  items: MessageSummary[];
  /** Pass back as `cursor` for the next page; null on the last. */
  next_cursor: string | null;
}

/** One invalid field of a request, e.g. `body.to.0` or `query.limit`. */
export interface FieldError {
  location: string;
  message: string;
}

/** Why an address is on the tenant's suppression list. */
export type SuppressionReason = "bounce" | "complaint";

/** An address Herald refuses to send to for this tenant (SuppressionOut). */
export interface Suppression {
  address: string;
  reason: SuppressionReason;
  /** The message whose bounce or complaint put it there. */
  message_id: string | null;
  /** What SES said, such as the bounce's diagnostic. */
  detail: string | null;
  created_at: string;
}

/** One page of GET /v1/suppressions (SuppressionPage). */
export interface SuppressionPage {
  items: Suppression[];
  next_cursor: string | null;
}
