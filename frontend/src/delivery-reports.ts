/**
 * What SES reported about a message, as the message's page shows it: one row per
 * recipient, and how long the page keeps asking for more.
 */

import type { Message, RecipientReport } from "./api/types";
import { awaitsReports, isFinal } from "./api/types";

/**
 * How long after SES accepted a message its page keeps polling for reports. `sent` is no
 * longer final: SES reports most deliveries and bounces within seconds to minutes, but a
 * delayed delivery, a late bounce or a complaint (after a delivery) can come hours or days
 * later. Polling an open tab for that long costs requests and tells little, so the page
 * stops 15 minutes after the send (backing off to one look every 30 s, that is at most
 * ~40 looks) and says that a reload looks again.
 */
export const REPORT_WINDOW_MS = 15 * 60_000;

/**
 * The least time a page polls a message awaiting reports once it has seen it, whatever
 * its send time says: an old message may still get one last report, and the browser's
 * clock may be ahead of Herald's.
 */
export const MIN_REPORT_LOOK_MS = 60_000;

/**
 * Whether the page should keep polling `message`: until its status is final (`complained`,
 * `failed`, `canceled`); and, once SES has it (`sent`, `delivered`, `bounced`), until
 * REPORT_WINDOW_MS after its send, or MIN_REPORT_LOOK_MS after `watchingSince` (when the
 * page first saw it awaiting reports), whichever is later. Scheduled and queued messages
 * are polled as long as the page is open, as before.
 */
export function keepsPolling(message: Message, now: Date, watchingSince: Date): boolean {
  if (isFinal(message.status)) return false;
  if (!awaitsReports(message.status)) return true;
  const sentAt = Date.parse(message.finished_at ?? message.updated_at);
  const deadline = Math.max(
    sentAt + REPORT_WINDOW_MS,
    watchingSince.getTime() + MIN_REPORT_LOOK_MS,
  );
  return now.getTime() < deadline;
}

/** A recipient of the message and SES's report on it, if any yet. */
export interface RecipientRow {
  address: string;
  report: RecipientReport | null;
}

/**
 * Every recipient (To, Cc, Bcc, in that order) with its report, so a recipient SES has not
 * reported on yet still has a row. Addresses match without case; a report on an address
 * the message does not name (SES may spell an international domain in its ASCII form)
 * gets a row of its own at the end rather than being hidden.
 */
export function recipientRows(message: Message): RecipientRow[] {
  const reports = new Map(
    message.recipients.map((report) => [report.address.toLowerCase(), report]),
  );
  const rows: RecipientRow[] = [];
  const seen = new Set<string>();
  for (const address of [...message.to, ...message.cc, ...message.bcc]) {
    const key = address.toLowerCase();
    if (seen.has(key)) continue;
    seen.add(key);
    rows.push({ address, report: reports.get(key) ?? null });
  }
  for (const report of message.recipients) {
    if (!seen.has(report.address.toLowerCase())) rows.push({ address: report.address, report });
  }
  return rows;
}

/** Whether the page has reports to show, or is waiting for them. */
export function showsReports(message: Message): boolean {
  return (
    message.recipients.length > 0 ||
    message.events.length > 0 ||
    awaitsReports(message.status) ||
    message.status === "complained"
  );
}

/** What a poll compares: the message changed when its status, time or any report did. */
export function reportFingerprint(message: Message): string {
  const recipients = message.recipients.map(
    (report) => `${report.address} ${report.status} ${report.updated_at}`,
  );
  return [message.status, message.updated_at, ...recipients, message.events.length].join("|");
}
