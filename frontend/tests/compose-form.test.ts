import { describe, expect, it } from "vitest";

import {
  type ComposeInput,
  messagesForSuppressed,
  messagesFromFieldErrors,
  parseAddresses,
  unplacedFieldErrors,
  validateCompose,
} from "../src/compose-form";

const context = { timeZone: "Europe/Paris", now: new Date("2026-11-30T08:00:00Z") };

function input(overrides: Partial<ComposeInput> = {}): ComposeInput {
  return {
    to: "ann@example.org",
    cc: "",
    bcc: "",
    subject: "Hello",
    text: "Sent by Herald",
    html: "",
    sendLater: false,
    sendAt: "",
    ...overrides,
  };
}

describe("parseAddresses", () => {
  it("splits on commas and new lines and drops blanks", () => {
    expect(parseAddresses(" a@x.org,b@y.org\n\n c@z.org ,")).toEqual([
      "a@x.org",
      "b@y.org",
      "c@z.org",
    ]);
  });
});

describe("validateCompose", () => {
  it("makes a draft to send now, without send_at", () => {
    const result = validateCompose(input({ cc: "bob@example.org, cy@example.org" }), context);

    expect(result).toEqual({
      ok: true,
      draft: {
        to: ["ann@example.org"],
        cc: ["bob@example.org", "cy@example.org"],
        bcc: [],
        subject: "Hello",
        text: "Sent by Herald",
        html: null,
      },
      sendAt: null,
    });
  });

  it("sends a local date and time as RFC 3339 with its offset", () => {
    const result = validateCompose(input({ sendLater: true, sendAt: "2026-12-01T09:00" }), context);

    expect(result.ok && result.draft.send_at).toBe("2026-12-01T09:00:00+01:00");
  });

  it.each<[string, Partial<ComposeInput>, Record<string, string>]>([
    ["no recipient", { to: " , " }, { to: "Add at least one recipient (in To, Cc or Bcc)." }],
    ["a bad address", { cc: "bob@example.org, bob@" }, { cc: "Not an email address: bob@" }],
    ["no subject", { subject: "  " }, { subject: "Write a subject." }],
    ["no body", { text: " ", html: "" }, { text: "Write the text of the email (or its HTML)." }],
    ["no date", { sendLater: true, sendAt: "" }, { sendAt: "Choose a date and time." }],
    [
      "a past date",
      { sendLater: true, sendAt: "2026-11-30T08:59" },
      { sendAt: "Choose a time in the future, or send now." },
    ],
    [
      "a skipped time",
      { sendLater: true, sendAt: "2027-03-28T02:30" },
      { sendAt: "This time does not exist in Europe/Paris (the clocks skip it)." },
    ],
  ])("explains %s next to its field", (_case, overrides, errors) => {
    expect(validateCompose(input(overrides), context)).toEqual({ ok: false, errors });
  });

  it("counts recipients across To, Cc and Bcc", () => {
    const fifty = Array.from({ length: 25 }, (_, i) => `r${i}@example.org`).join(",");

    const result = validateCompose(input({ to: fifty, bcc: `${fifty}, one@example.org` }), context);

    expect(result).toEqual({
      ok: false,
      errors: { to: "51 recipients: at most 50 in To, Cc and Bcc together." },
    });
  });

  it("accepts an HTML body without a text one", () => {
    const result = validateCompose(input({ text: "", html: "<p>Hi</p>" }), context);

    expect(result.ok && [result.draft.text, result.draft.html]).toEqual([null, "<p>Hi</p>"]);
  });
});

describe("messagesFromFieldErrors", () => {
  const draft = {
    to: ["ann@example.org", "bob@bad"],
    cc: [],
    bcc: [],
    subject: "Hi",
    text: "x",
    html: null,
  };

  it("names the address an indexed location points at", () => {
    const messages = messagesFromFieldErrors(
      [
        { location: "body.to.1", message: "value is not a valid email address" },
        { location: "body.send_at", message: "must be at most one year ahead" },
      ],
      draft,
    );

    expect(messages).toEqual({
      to: "bob@bad: value is not a valid email address",
      sendAt: "must be at most one year ahead",
    });
  });

  it("leaves errors that name no field of the form to the summary", () => {
    const messages = messagesFromFieldErrors(
      [
        { location: "body", message: "text or html is required" },
        { location: "body.reply_to.0", message: "bad" },
      ],
      draft,
    );

    expect(messages).toEqual({});
  });
});

describe("messagesForSuppressed", () => {
  it("marks each field holding a suppressed address, whatever its case", () => {
    const draft = {
      to: ["ann@example.org", "Bob@Example.org"],
      cc: [],
      bcc: ["cy@example.org"],
      subject: "Hi",
      text: "x",
      html: null,
    };

    const messages = messagesForSuppressed(["bob@example.org", "cy@example.org"], draft);

    const why = "on your suppression list (an earlier email bounced or was marked as spam).";
    expect(messages).toEqual({ to: `Bob@Example.org: ${why}`, bcc: `cy@example.org: ${why}` });
  });
});

describe("unplacedFieldErrors", () => {
  it("words the errors no field of the form shows as sentences for the summary", () => {
    const messages = unplacedFieldErrors([
      { location: "body", message: "text or html is required" },
      { location: "body.reply_to.0", message: "bad" },
      { location: "body.to.0", message: "value is not a valid email address" },
    ]);

    expect(messages).toEqual(["Text or html is required.", "Reply to: bad."]);
  });
});
