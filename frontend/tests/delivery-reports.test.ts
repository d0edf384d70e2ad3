import { describe, expect, it } from "vitest";

import type { MessageStatus, RecipientReport } from "../src/api/types";
import {
  keepsPolling,
  MIN_REPORT_LOOK_MS,
  recipientRows,
  REPORT_WINDOW_MS,
  reportFingerprint,
  showsReports,
} from "../src/delivery-reports";
import { aMessage } from "./fixtures";

const SENT_AT = new Date("2026-12-01T10:00:00Z");

function after(ms: number, from: Date = SENT_AT): Date {
  return new Date(from.getTime() + ms);
}

function aReport(overrides: Partial<RecipientReport> = {}): RecipientReport {
  return {
    address: "ann@example.org",
    status: "delivered",
    bounce_type: null,
    bounce_subtype: null,
    diagnostic: null,
    updated_at: "2026-12-01T10:00:02Z",
    ...overrides,
  };
}

function sentMessage(status: MessageStatus) {
  return aMessage({
    status,
    finished_at: SENT_AT.toISOString(),
    updated_at: "2026-12-01T10:00:03Z",
  });
}

describe("keepsPolling", () => {
  it.each(["scheduled", "queued"] as const)(
    "polls a %s message for as long as it takes",
    (status) => {
      const message = aMessage({ status });

      expect(keepsPolling(message, after(24 * 3_600_000), SENT_AT)).toBe(true);
    },
  );

  it.each(["complained", "failed", "canceled"] as const)(
    "stops at once for a %s message, which cannot change any more",
    (status) => {
      expect(keepsPolling(sentMessage(status), SENT_AT, SENT_AT)).toBe(false);
    },
  );

  it.each(["sent", "delivered", "bounced"] as const)(
    "polls a %s message for SES's reports until the window after its send is over",
    (status) => {
      // Given a page that has watched it since it was sent
      const message = sentMessage(status);
      // Then it polls just before the window ends, and not at its end
      expect(keepsPolling(message, after(REPORT_WINDOW_MS - 1), SENT_AT)).toBe(true);
      expect(keepsPolling(message, after(REPORT_WINDOW_MS), SENT_AT)).toBe(false);
    },
  );

  it("takes one last short look at a message sent long before the page opened", () => {
    // Given a page opened a day after the send
    const opened = after(24 * 3_600_000);
    const message = sentMessage("sent");

    // Then it polls for a minute, then stops
    expect(keepsPolling(message, after(MIN_REPORT_LOOK_MS - 1, opened), opened)).toBe(true);
    expect(keepsPolling(message, after(MIN_REPORT_LOOK_MS, opened), opened)).toBe(false);
  });
});

describe("recipientRows", () => {
  it("gives every recipient a row, with SES's report where there is one", () => {
    // Given two of three recipients reported on, one in another case
    const bounced = aReport({ address: "BOB@example.org", status: "bounced" });
    const message = aMessage({
      to: ["ann@example.org"],
      cc: ["bob@example.org"],
      bcc: ["cy@example.org"],
      recipients: [aReport(), bounced],
    });

    // When
    const rows = recipientRows(message);

    // Then
    expect(rows).toEqual([
      { address: "ann@example.org", report: aReport() },
      { address: "bob@example.org", report: bounced },
      { address: "cy@example.org", report: null },
    ]);
  });

  it("keeps a report on an address the message spells otherwise", () => {
    const ascii = aReport({ address: "ann@xn--bcher-kva.example" });
    const message = aMessage({ to: ["ann@bücher.example"], recipients: [ascii] });

    expect(recipientRows(message)).toEqual([
      { address: "ann@bücher.example", report: null },
      { address: "ann@xn--bcher-kva.example", report: ascii },
    ]);
  });
});

describe("showsReports", () => {
  it.each([
    ["scheduled", false],
    ["queued", false],
    ["canceled", false],
    ["failed", false],
    ["sent", true],
    ["delivered", true],
    ["bounced", true],
    ["complained", true],
  ] as const)("shows the recipients of a %s message: %s", (status, shown) => {
    expect(showsReports(aMessage({ status }))).toBe(shown);
  });

  it("shows a failed message's reports when SES rejected it", () => {
    const message = aMessage({ status: "failed", recipients: [aReport({ status: "rejected" })] });

    expect(showsReports(message)).toBe(true);
  });
});

describe("reportFingerprint", () => {
  it("changes when a recipient's report does, though the message's time does not", () => {
    const before = sentMessage("bounced");
    const after = { ...before, recipients: [aReport({ status: "complained" })] };

    expect(reportFingerprint(after)).not.toBe(reportFingerprint(before));
  });

  it("changes when an event is added", () => {
    const before = sentMessage("sent");
    const event = {
      type: "Send",
      recipient: null,
      occurred_at: "2026-12-01T10:00:01Z",
      detail: {},
    };

    expect(reportFingerprint({ ...before, events: [event] })).not.toBe(reportFingerprint(before));
  });
});
