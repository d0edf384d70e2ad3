/**
 * The compose form's rules: what a person typed becomes a MessageDraft, or a message per
 * field saying what to fix. The API checks the same things (and more); checking here first
 * answers faster and in plainer words.
 */

import type { FieldError, MessageDraft } from "./api/types";
import { parseLocalDateTime, type ZonedDateTime, zonedDateTime } from "./time";

/** The API's limits (shared/contracts.py). */
export const MAX_RECIPIENTS = 50;
export const MAX_SUBJECT_LENGTH = 998;

export const COMPOSE_FIELDS = ["to", "cc", "bcc", "subject", "text", "html", "sendAt"] as const;
export type ComposeField = (typeof COMPOSE_FIELDS)[number];
export type FieldMessages = Partial<Record<ComposeField, string>>;

/** The form's values, as typed. */
export interface ComposeInput {
  to: string;
  cc: string;
  bcc: string;
  subject: string;
  text: string;
  html: string;
  sendLater: boolean;
  /** An <input type="datetime-local"> value, read in `timeZone`. */
  sendAt: string;
}

export type ComposeResult =
  { ok: true; draft: MessageDraft; sendAt: Date | null } | { ok: false; errors: FieldMessages };

// Deliberately loose: the API's validator is the authority, this only catches typos early.
const LOOKS_LIKE_EMAIL = /^[^\s@,;<>]+@[^\s@,;<>]+\.[^\s@,;<>]+$/;

/** "a@x.org, b@y.org\nc@z.org" -> three addresses; blanks between separators are ignored. */
export function parseAddresses(raw: string): string[] {
  return raw
    .split(/[,\n]/)
    .map((address) => address.trim())
    .filter((address) => address !== "");
}

export function validateCompose(
  input: ComposeInput,
  context: { timeZone: string; now: Date },
): ComposeResult {
  const errors: FieldMessages = {};
  const lists = {
    to: parseAddresses(input.to),
    cc: parseAddresses(input.cc),
    bcc: parseAddresses(input.bcc),
  };
  for (const field of ["to", "cc", "bcc"] as const) {
    const invalid = lists[field].filter((address) => !LOOKS_LIKE_EMAIL.test(address));
    if (invalid.length > 0) errors[field] = `Not an email address: ${invalid.join(", ")}`;
  }
  const recipients = lists.to.length + lists.cc.length + lists.bcc.length;
  if (recipients === 0) errors.to ??= "Add at least one recipient (in To, Cc or Bcc).";
  if (recipients > MAX_RECIPIENTS) {
    errors.to ??= `${recipients} recipients: at most ${MAX_RECIPIENTS} in To, Cc and Bcc together.`;
  }

  const subject = input.subject.trim();
  if (subject === "") errors.subject = "Write a subject.";
  else if (subject.length > MAX_SUBJECT_LENGTH) {
    errors.subject = `The subject is ${subject.length} characters: at most ${MAX_SUBJECT_LENGTH}.`;
  }

  const text = input.text.trim() === "" ? null : input.text;
  const html = input.html.trim() === "" ? null : input.html;
  if (text === null && html === null) errors.text = "Write the text of the email (or its HTML).";

  let sendAt: ZonedDateTime | null = null;
  if (input.sendLater) {
    const wall = parseLocalDateTime(input.sendAt);
    const zoned = wall ? zonedDateTime(wall, context.timeZone) : null;
    if (!wall) errors.sendAt = "Choose a date and time.";
    else if (!zoned)
      errors.sendAt = `This time does not exist in ${context.timeZone} (the clocks skip it).`;
    else if (zoned.instant <= context.now)
      errors.sendAt = "Choose a time in the future, or send now.";
    else sendAt = zoned;
  }

  if (Object.keys(errors).length > 0) return { ok: false, errors };
  const draft: MessageDraft = { ...lists, subject, text, html };
  if (sendAt) draft.send_at = sendAt.rfc3339;
  return { ok: true, draft, sendAt: sendAt?.instant ?? null };
}

const FIELD_OF_BODY_KEY: Record<string, ComposeField> = {
  to: "to",
  cc: "cc",
  bcc: "bcc",
  subject: "subject",
  text: "text",
  html: "html",
  send_at: "sendAt",
};

function fieldOf(location: string): ComposeField | undefined {
  const [source, key] = location.split(".");
  return source === "body" && key !== undefined ? FIELD_OF_BODY_KEY[key] : undefined;
}

/**
 * Puts the API's field errors next to the fields they name: `body.to.1` is the second
 * address of To, so its message names that address. Errors about no field of the form
 * (`body` as a whole) are left for the form's summary, which shows the problem's detail.
 */
export function messagesFromFieldErrors(errors: FieldError[], draft: MessageDraft): FieldMessages {
  const messages: FieldMessages = {};
  for (const { location, message } of errors) {
    const [, key, index] = location.split(".");
    const field = fieldOf(location);
    if (!field) continue;
    const address =
      index !== undefined && (key === "to" || key === "cc" || key === "bcc")
        ? draft[key][Number(index)]
        : undefined;
    const text = address === undefined ? message : `${address}: ${message}`;
    messages[field] = messages[field] ? `${messages[field]} ${text}` : text;
  }
  return messages;
}

/**
 * Marks the fields holding addresses the API refused as suppressed (a `recipient-suppressed`
 * problem's `suppressed` member). Compared without case, as the suppression list is keyed.
 */
export function messagesForSuppressed(suppressed: string[], draft: MessageDraft): FieldMessages {
  const listed = new Set(suppressed.map((address) => address.toLowerCase()));
  const messages: FieldMessages = {};
  for (const field of ["to", "cc", "bcc"] as const) {
    const found = draft[field].filter((address) => listed.has(address.toLowerCase()));
    if (found.length > 0) {
      messages[field] =
        `${found.join(", ")}: on your suppression list ` +
        "(an earlier email bounced or was marked as spam).";
    }
  }
  return messages;
}

/**
 * The API's field errors that no field of the form can show (`body` as a whole, or a field
 * the form does not have, such as `reply_to`), as sentences for the form's summary.
 */
export function unplacedFieldErrors(errors: FieldError[]): string[] {
  return errors
    .filter(({ location }) => fieldOf(location) === undefined)
    .map(({ location, message }) => {
      // "body.reply_to.0" -> "Reply to: …"; "body" -> the message alone.
      const key = location.split(".")[1]?.replace(/_/g, " ");
      const text = key ? `${key}: ${message}` : message;
      const capital = text.charAt(0).toUpperCase() + text.slice(1);
      return /[.!?]$/.test(capital) ? capital : `${capital}.`;
    });
}
