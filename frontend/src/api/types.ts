/** The API's bodies, as ecs_service/api/schemas.py and problems.py define them. */

export const MESSAGE_STATUSES = ["scheduled", "queued", "sent", "failed", "canceled"] as const;

/** scheduled -> queued -> sent | failed, or scheduled -> canceled. */
export type MessageStatus = (typeof MESSAGE_STATUSES)[number];

export function isMessageStatus(value: string): value is MessageStatus {
  return (MESSAGE_STATUSES as readonly string[]).includes(value);
}

/** A status that will not change any more: polling for it is pointless. */
export function isFinal(status: MessageStatus): boolean {
  return status === "sent" || status === "failed" || status === "canceled";
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
}

/**
 * A message as a list page gives it (MessageSummary): everything but the bodies, which
 * keep a page small; GET /v1/messages/{id} has them.
 */
export type MessageSummary = Omit<Message, "text" | "html">;

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
