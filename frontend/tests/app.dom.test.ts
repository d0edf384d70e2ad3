// @vitest-environment jsdom
import { fireEvent, screen, waitFor, within } from "@testing-library/dom";
import axe from "axe-core";
import { afterEach, describe, expect, it, vi } from "vitest";

import type { Suppression } from "../src/api/types";
import { type RunningApp, startApp } from "../src/app";
import { ApiKeyStore } from "../src/session";
import { formatDateTime } from "../src/time";
import { aMessage, API } from "./fixtures";
import { FakeHerald } from "./fake-herald";

let app: RunningApp | undefined;

afterEach(() => {
  app?.stop();
  vi.useRealTimers();
});

/** Starts the app at `path`, connected with `apiKey` unless it is null. */
function start(
  herald: FakeHerald,
  path: string,
  apiKey: string | null = herald.apiKey,
  now: () => Date = () => new Date("2026-11-30T08:00:00Z"),
) {
  history.replaceState(null, "", path);
  sessionStorage.clear();
  if (apiKey) sessionStorage.setItem("herald.apiKey", apiKey);
  const root = document.createElement("div");
  document.body.replaceChildren(root);
  let keys = 0;
  const confirm = vi.fn(() => true);
  app = startApp({
    root,
    config: { apiBaseUrl: API },
    keys: new ApiKeyStore(sessionStorage),
    fetch: herald.fetch,
    timeZone: "Europe/Paris",
    now,
    confirm,
    newIdempotencyKey: () => `key-${++keys}`,
  });
  return { confirm };
}

function type(label: string | RegExp, value: string): void {
  fireEvent.input(screen.getByLabelText(label), { target: { value } });
}

function send(): void {
  fireEvent.click(screen.getByRole("button", { name: "Send" }));
}

describe("compose", () => {
  it("schedules an email at a local time and shows it in the list", async () => {
    // Given
    const herald = new FakeHerald();
    start(herald, "/compose");
    // When
    type("To", "ann@example.org,\nbob@example.org");
    type("Subject", "Hello");
    type("Text", "Sent by Herald");
    fireEvent.click(screen.getByLabelText("At a date and time"));
    type("Date and time", "2026-12-01T09:00");
    expect(screen.getByText("Time zone: Europe/Paris (UTC+01:00)")).toBeTruthy();
    send();
    // Then the API got one request with the key and the offset
    const notice = await screen.findByText(/“Hello” is scheduled for/);
    const when = formatDateTime("2026-12-01T08:00:00Z", "Europe/Paris");
    expect(notice.textContent).toBe(`“Hello” is scheduled for ${when} (Europe/Paris).`);
    const post = herald.requests.find((request) => request.method === "POST");
    expect(post?.headers.get("Idempotency-Key")).toBe("key-1");
    expect(post?.body).toEqual({
      to: ["ann@example.org", "bob@example.org"],
      cc: [],
      bcc: [],
      subject: "Hello",
      text: "Sent by Herald",
      html: null,
      send_at: "2026-12-01T09:00:00+01:00",
    });
    // And the list shows the new message, with the keyboard at its heading
    const row = await screen.findByRole("link", { name: /Hello/ });
    expect(within(row).getByText("Scheduled")).toBeTruthy();
    expect(location.pathname).toBe("/");
    expect(document.activeElement).toBe(screen.getByRole("heading", { name: "Messages" }));
  });

  it("shows the API's field error next to the field it names", async () => {
    // Given an address the API refuses
    const herald = new FakeHerald();
    herald.nextProblem = {
      type: "urn:herald:problem:validation-error",
      title: "Invalid Request",
      status: 422,
      detail: "body.to.1: value is not a valid email address",
      errors: [{ location: "body.to.1", message: "value is not a valid email address" }],
    };
    start(herald, "/compose");
    type("To", "ann@example.org, bob@example.invalid");
    type("Subject", "Hello");
    type("Text", "Hi");
    // When
    send();
    // Then
    const to = screen.getByLabelText("To");
    await waitFor(() => expect(to.getAttribute("aria-invalid")).toBe("true"));
    const error = document.getElementById("to-error");
    expect(error?.textContent).toBe("bob@example.invalid: value is not a valid email address");
    expect(to.getAttribute("aria-describedby")).toContain("to-error");
    expect(document.activeElement).toBe(to);
    // And the summary points at the fields without repeating what they say
    expect(screen.getByRole("alert").textContent).toBe(
      "Herald did not accept some of the fields: see the messages next to them.",
    );
    // And the corrected email goes out with a new idempotency key
    type("To", "ann@example.org");
    send();
    await screen.findByText(/“Hello” is on its way/);
    const keys = herald.requests.map((request) => request.headers.get("Idempotency-Key"));
    expect(keys.filter(Boolean)).toEqual(["key-1", "key-2"]);
  });

  it("keeps the idempotency key when the answer is lost, so a retry cannot send twice", async () => {
    const herald = new FakeHerald();
    start(herald, "/compose");
    type("To", "ann@example.org");
    type("Subject", "Hello");
    type("Text", "Hi");
    herald.offline = true;

    send();
    await screen.findByText(/Could not reach the API.*it will not be sent twice/);
    herald.offline = false;
    send();
    await screen.findByText(/“Hello” is on its way/);

    const keys = herald.requests.map((request) => request.headers.get("Idempotency-Key"));
    expect(keys).toEqual(["key-1", "key-1", null]);
  });

  it("shows an API error that names no field of the form in the summary", async () => {
    // Given an API that refuses the body as a whole
    const herald = new FakeHerald();
    herald.nextProblem = {
      type: "urn:herald:problem:validation-error",
      title: "Invalid Request",
      status: 422,
      detail: "body: text or html is required",
      errors: [{ location: "body", message: "text or html is required" }],
    };
    start(herald, "/compose");
    type("To", "ann@example.org");
    type("Subject", "Hello");
    type("Text", "Hi");
    // When
    send();
    // Then the summary says it, in a sentence, and no field is marked
    const alert = await screen.findByText(/Herald did not accept this email/);
    expect(alert.textContent).toBe("Herald did not accept this email. Text or html is required.");
    expect(document.querySelector("[aria-invalid=true]")).toBeNull();
  });

  it("says when to try again when Herald is busy", async () => {
    // Given an API that sheds load for two seconds
    const herald = new FakeHerald();
    herald.nextProblem = {
      type: "urn:herald:problem:overloaded",
      title: "Service Unavailable",
      status: 503,
      detail: "the api is saturated; retry after Retry-After",
    };
    herald.nextHeaders = { "Retry-After": "2" };
    start(herald, "/compose");
    type("To", "ann@example.org");
    type("Subject", "Hello");
    type("Text", "Hi");
    // When
    send();
    // Then
    const alert = await screen.findByRole("alert");
    await waitFor(() =>
      expect(alert.textContent).toBe(
        "Herald is busy right now. Try again in 2 seconds. If you send again, it will not be sent twice.",
      ),
    );
  });

  it("explains what to fix before sending anything", () => {
    const herald = new FakeHerald();
    start(herald, "/compose");

    send();

    expect(herald.requests).toEqual([]);
    expect(document.getElementById("to-error")?.textContent).toBe(
      "Add at least one recipient (in To, Cc or Bcc).",
    );
    expect(document.getElementById("subject-error")?.textContent).toBe("Write a subject.");
    expect(document.activeElement).toBe(screen.getByLabelText("To"));
  });
});

describe("messages", () => {
  it("updates a status live and announces it", async () => {
    // Given a scheduled message on the list
    vi.useFakeTimers();
    const herald = new FakeHerald();
    herald.messages = [aMessage({ id: "m1", subject: "Hello" })];
    start(herald, "/");
    await vi.advanceTimersByTimeAsync(0);
    expect(within(screen.getByRole("link", { name: /Hello/ })).getByText("Scheduled")).toBeTruthy();
    // When the worker sends it and the next poll comes
    herald.update("m1", { status: "sent", finished_at: "2026-11-30T08:00:05Z" });
    await vi.advanceTimersByTimeAsync(2_000);
    // Then
    expect(within(screen.getByRole("link", { name: /Hello/ })).getByText("Sent")).toBeTruthy();
    expect(document.querySelector("[aria-live]")?.textContent).toBe("“Hello” is now sent.");
  });

  it("loads the next page with the cursor and moves the keyboard to it", async () => {
    const herald = new FakeHerald();
    herald.messages = Array.from({ length: 25 }, (_, i) =>
      aMessage({ id: `m${i}`, subject: `S${i}` }),
    );
    start(herald, "/?status=scheduled");
    await screen.findByRole("link", { name: /^S19 / });

    fireEvent.click(screen.getByRole("button", { name: "Load more" }));

    await waitFor(() =>
      expect(document.activeElement).toBe(screen.getByRole("link", { name: /^S20 / })),
    );
    expect(screen.getAllByRole("link", { name: /^S\d+/ })).toHaveLength(25);
    expect(screen.queryByRole("button", { name: "Load more" })).toBeNull();
    expect(herald.requests.at(-1)?.url.search).toBe("?status=scheduled&limit=20&cursor=20");
  });

  it("says when there is nothing to show", async () => {
    start(new FakeHerald(), "/");

    expect(await screen.findByText("No messages yet. Compose one to get started.")).toBeTruthy();
  });

  it("hints at a retry when the API cannot be reached", async () => {
    const herald = new FakeHerald();
    herald.offline = true;
    start(herald, "/");

    await screen.findByText(/Could not reach the API at https:\/\/api.example.test/);
    herald.offline = false;
    fireEvent.click(screen.getByRole("button", { name: "Try again" }));

    expect(await screen.findByText("No messages yet. Compose one to get started.")).toBeTruthy();
  });

  it("lists messages without their bodies, and reads the body on the message's page", async () => {
    // Given a sent message
    const herald = new FakeHerald();
    herald.messages = [
      aMessage({
        id: "m1",
        subject: "Hello",
        text: "The body",
        status: "sent",
        created_at: "2026-11-30T08:00:01Z",
        finished_at: "2026-11-30T08:00:07Z",
      }),
    ];
    start(herald, "/");
    const link = await screen.findByRole("link", { name: /^Hello Sent/ });
    expect(screen.queryByText("The body")).toBeNull();
    // When it is opened
    fireEvent.click(link);
    // Then its body comes from GET /v1/messages/m1, and its times show seconds
    expect(await screen.findByText("The body")).toBeTruthy();
    expect(herald.requests.at(-1)?.url.pathname).toBe("/v1/messages/m1");
    const finished = formatDateTime("2026-11-30T08:00:07Z", "Europe/Paris", { seconds: true });
    expect(screen.getByText(`${finished} (Europe/Paris)`)).toBeTruthy();
    expect(finished).toMatch(/:07/);
  });

  it("cancels a scheduled message after confirming", async () => {
    // Given
    const herald = new FakeHerald();
    herald.messages = [aMessage({ id: "m1", subject: "Hello" })];
    const { confirm } = start(herald, "/messages/m1");
    // When
    fireEvent.click(await screen.findByRole("button", { name: "Cancel this email" }));
    // Then the status says so, and the keyboard is on it now that the button is gone
    await waitFor(() => expect(document.activeElement?.textContent).toBe("Canceled"));
    expect(screen.queryByRole("button", { name: "Cancel this email" })).toBeNull();
    expect(confirm).toHaveBeenCalledWith("Cancel “Hello”? It will not be sent.");
    expect(herald.requests.at(-1)?.method).toBe("DELETE");
  });
});

describe("delivery reports", () => {
  const BOUNCE = "bounce@simulator.amazonses.com";
  const DIAGNOSTIC = "smtp; 550 5.1.1 user unknown";

  function recipientsTable(): HTMLElement {
    return screen.getByRole("table", { name: "Recipients" });
  }

  it("shows a bounced recipient's bounce type and diagnostic in the recipients table", async () => {
    // Given a message to two addresses, one of which bounced
    const herald = new FakeHerald();
    herald.messages = [
      aMessage({
        id: "m1",
        status: "bounced",
        to: ["ann@example.org", BOUNCE],
        finished_at: "2026-11-30T08:00:01Z",
        recipients: [
          {
            address: BOUNCE,
            status: "bounced",
            bounce_type: "Permanent",
            bounce_subtype: "General",
            diagnostic: DIAGNOSTIC,
            updated_at: "2026-11-30T08:00:03Z",
          },
        ],
      }),
    ];
    // When its page is opened
    start(herald, "/messages/m1");
    // Then the bounced row reads its state in words, its bounce and its diagnostic
    const row = within(await screen.findByRole("table", { name: "Recipients" })).getByRole("row", {
      name: new RegExp(BOUNCE),
    });
    const when = formatDateTime("2026-11-30T08:00:03Z", "Europe/Paris", { seconds: true });
    expect([...row.children].map((cell) => cell.textContent)).toEqual([
      BOUNCE,
      "Bounced",
      "Permanent · General",
      DIAGNOSTIC,
      when,
    ]);
    // And the recipient SES has not reported on yet has a row saying so
    const waiting = within(recipientsTable()).getByRole("row", { name: /ann@example\.org/ });
    expect(waiting.textContent).toContain("No report yet");
    expect(document.getElementById("message-status")?.textContent).toBe("Bounced");
  });

  it("has nothing axe-core finds wrong (its rules that need no layout)", async () => {
    // Given a bounced message's page, with its tables
    const herald = new FakeHerald();
    herald.messages = [
      aMessage({
        id: "m1",
        status: "bounced",
        to: [BOUNCE],
        finished_at: "2026-11-30T08:00:01Z",
        recipients: [
          {
            address: BOUNCE,
            status: "bounced",
            bounce_type: "Permanent",
            bounce_subtype: "General",
            diagnostic: DIAGNOSTIC,
            updated_at: "2026-11-30T08:00:03Z",
          },
        ],
        events: [
          { type: "Send", recipient: null, occurred_at: "2026-11-30T08:00:01Z", detail: {} },
        ],
      }),
    ];
    start(herald, "/messages/m1");
    await screen.findByRole("table", { name: "Events" });
    // When
    const results = await axe.run(document.body, {
      resultTypes: ["violations"],
      // jsdom lays nothing out: the browser test checks contrast, on the real page.
      rules: { "color-contrast": { enabled: false } },
    });
    // Then
    expect(results.violations.map((violation) => violation.id)).toEqual([]);
  });

  it("lists SES's events, oldest first, in words", async () => {
    const herald = new FakeHerald();
    herald.messages = [
      aMessage({
        id: "m1",
        status: "bounced",
        to: [BOUNCE],
        finished_at: "2026-11-30T08:00:01Z",
        events: [
          { type: "Send", recipient: null, occurred_at: "2026-11-30T08:00:01Z", detail: {} },
          {
            type: "Bounce",
            recipient: BOUNCE,
            occurred_at: "2026-11-30T08:00:03Z",
            detail: {
              bounceType: "Permanent",
              bouncedRecipients: [{ emailAddress: BOUNCE, diagnosticCode: DIAGNOSTIC }],
            },
          },
        ],
      }),
    ];
    start(herald, "/messages/m1");

    const table = await screen.findByRole("table", { name: "Events" });

    const rows = within(table).getAllByRole("row").slice(1);
    expect(rows.map((row) => [...row.children].slice(1).map((cell) => cell.textContent))).toEqual([
      ["Accepted by SES", "", ""],
      [
        "Bounced",
        BOUNCE,
        `bounce type: Permanent; bounced recipients: ${BOUNCE} (diagnostic code: ${DIAGNOSTIC})`,
      ],
    ]);
  });

  it("keeps polling a sent message until SES's bounce arrives, and announces it", async () => {
    // Given a message just sent, with no report yet
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const herald = new FakeHerald();
    herald.messages = [
      aMessage({ id: "m1", status: "sent", to: [BOUNCE], finished_at: "2026-11-30T08:00:00Z" }),
    ];
    start(herald, "/messages/m1");
    await vi.advanceTimersByTimeAsync(0);
    expect(document.getElementById("message-status")?.textContent).toBe("Sent");
    // When SES reports the bounce and the next poll comes
    herald.update("m1", {
      status: "bounced",
      recipients: [
        {
          address: BOUNCE,
          status: "bounced",
          bounce_type: "Permanent",
          bounce_subtype: "General",
          diagnostic: DIAGNOSTIC,
          updated_at: "2026-11-30T08:00:02Z",
        },
      ],
    });
    await vi.advanceTimersByTimeAsync(2_000);
    // Then
    expect(document.getElementById("message-status")?.textContent).toBe("Bounced");
    expect(within(recipientsTable()).getByText(DIAGNOSTIC)).toBeTruthy();
    expect(document.querySelector("[aria-live]")?.textContent).toBe("Status: bounced.");
  });

  it("stops polling once SES's window after the send is over, and says a reload looks again", async () => {
    // Given a message sent 14 minutes ago that SES has not reported on
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    let now = new Date("2026-11-30T08:14:00Z");
    const herald = new FakeHerald();
    herald.messages = [aMessage({ id: "m1", status: "sent", finished_at: "2026-11-30T08:00:00Z" })];
    start(herald, "/messages/m1", herald.apiKey, () => now);
    await vi.advanceTimersByTimeAsync(0);
    // When the page has looked for more than the last minute of the window
    for (let second = 0; second < 120; second += 2) {
      now = new Date(now.getTime() + 2_000);
      await vi.advanceTimersByTimeAsync(2_000);
    }
    const polls = herald.requests.length;
    await vi.advanceTimersByTimeAsync(600_000);
    // Then it asks no more, and says so
    expect(herald.requests.length).toBe(polls);
    expect(
      screen.getByText(/This page has stopped checking: reload it to look again\./),
    ).toBeTruthy();
  });

  it("does not poll a message that can no longer change", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const herald = new FakeHerald();
    herald.messages = [
      aMessage({ id: "m1", status: "complained", finished_at: "2026-11-30T08:00:00Z" }),
    ];
    start(herald, "/messages/m1");
    await vi.advanceTimersByTimeAsync(0);

    await vi.advanceTimersByTimeAsync(60_000);

    expect(herald.requests).toHaveLength(1);
  });

  it("offers every status in the list's filter, and asks the API for the chosen one", async () => {
    // Given
    const herald = new FakeHerald();
    start(herald, "/");
    await screen.findByText("No messages yet. Compose one to get started.");
    const filter = screen.getByLabelText("Status");
    // Then
    expect([...filter.querySelectorAll("option")].map((option) => option.textContent)).toEqual([
      "All",
      "Scheduled",
      "Queued",
      "Sent",
      "Delivered",
      "Bounced",
      "Complained",
      "Failed",
      "Canceled",
    ]);
    // When
    fireEvent.change(filter, { target: { value: "bounced" } });
    // Then
    expect(await screen.findByText("No bounced messages.")).toBeTruthy();
    expect(herald.requests.at(-1)?.url.search).toBe("?status=bounced&limit=20");
    expect(location.search).toBe("?status=bounced");
  });

  it("names a suppressed address next to the field that holds it", async () => {
    // Given an API that refuses the email because one Cc address is suppressed
    const herald = new FakeHerald();
    herald.nextProblem = {
      type: "urn:herald:problem:recipient-suppressed",
      title: "Recipient Suppressed",
      status: 422,
      detail: "bob@example.org is on this tenant's suppression list",
      suppressed: ["bob@example.org"],
    };
    start(herald, "/compose");
    type("To", "ann@example.org");
    type("Cc", "Bob@example.org");
    type("Subject", "Hello");
    type("Text", "Hi");
    // When
    send();
    // Then
    const cc = screen.getByLabelText("Cc");
    await waitFor(() => expect(cc.getAttribute("aria-invalid")).toBe("true"));
    expect(document.getElementById("cc-error")?.textContent).toBe(
      "Bob@example.org: on your suppression list (an earlier email bounced or was marked as spam).",
    );
    expect(screen.getByLabelText("To").getAttribute("aria-invalid")).not.toBe("true");
    expect(screen.getByRole("alert").textContent).toContain(
      "Herald did not schedule this email: bob@example.org is on your suppression list",
    );
  });
});

describe("suppressions", () => {
  function aSuppression(address: string): Suppression {
    return {
      address,
      reason: "bounce",
      message_id: "m1",
      detail: "smtp; 550 5.1.1 user unknown",
      created_at: "2026-11-30T08:00:03Z",
    };
  }

  it("lists the suppressed addresses with why and since when", async () => {
    const herald = new FakeHerald();
    herald.suppressions = [{ ...aSuppression("bob@example.org"), reason: "complaint" }];
    start(herald, "/suppressions");

    const row = await screen.findByRole("row", { name: /bob@example\.org/ });

    expect(row.textContent).toContain("Marked as spam");
    expect(row.textContent).toContain(formatDateTime("2026-11-30T08:00:03Z", "Europe/Paris"));
    expect(within(row).getByRole("link", { name: "The email" }).getAttribute("href")).toBe(
      "/messages/m1",
    );
  });

  it("removes an address after confirming, and moves the keyboard to the next one", async () => {
    // Given two suppressed addresses
    const herald = new FakeHerald();
    herald.suppressions = [aSuppression("ann@example.org"), aSuppression("bob@example.org")];
    const { confirm } = start(herald, "/suppressions");
    // When the first is removed
    fireEvent.click(await screen.findByRole("button", { name: "Remove ann@example.org" }));
    // Then the API took it off, the row is gone, and the keyboard is on the next button
    await waitFor(() =>
      expect(document.activeElement).toBe(
        screen.getByRole("button", { name: "Remove bob@example.org" }),
      ),
    );
    expect(confirm).toHaveBeenCalledWith(
      expect.stringMatching(/^Remove ann@example\.org from the suppression list\?/),
    );
    expect(herald.requests.at(-1)?.method).toBe("DELETE");
    expect(herald.suppressions.map((suppression) => suppression.address)).toEqual([
      "bob@example.org",
    ]);
    expect(screen.queryByRole("row", { name: /ann@example\.org/ })).toBeNull();
    expect(document.querySelector("[aria-live]")?.textContent).toBe(
      "ann@example.org is no longer suppressed.",
    );
  });

  it("keeps an address whose removal was not confirmed", async () => {
    const herald = new FakeHerald();
    herald.suppressions = [aSuppression("ann@example.org")];
    const { confirm } = start(herald, "/suppressions");
    confirm.mockReturnValue(false);

    fireEvent.click(await screen.findByRole("button", { name: "Remove ann@example.org" }));

    expect(herald.requests.map((request) => request.method)).toEqual(["GET"]);
    expect(screen.getByRole("row", { name: /ann@example\.org/ })).toBeTruthy();
  });

  it("says when no address is suppressed", async () => {
    start(new FakeHerald(), "/suppressions");

    expect(await screen.findByText("No suppressed addresses.")).toBeTruthy();
  });
});

describe("connection", () => {
  it("connects with a key kept in session storage, and disconnects", async () => {
    // Given
    const herald = new FakeHerald();
    start(herald, "/compose", null);
    // When
    type("API key", herald.apiKey);
    fireEvent.click(screen.getByRole("button", { name: "Connect" }));
    // Then the screen asked for is shown
    expect(await screen.findByRole("heading", { name: "Compose an email" })).toBeTruthy();
    expect(sessionStorage.getItem("herald.apiKey")).toBe(herald.apiKey);
    expect(location.href).not.toContain(herald.apiKey);
    // When
    fireEvent.click(screen.getByRole("button", { name: "Disconnect" }));
    // Then
    expect(sessionStorage.getItem("herald.apiKey")).toBeNull();
    expect(screen.getByRole("heading", { name: "Connect to Herald" })).toBeTruthy();
  });

  it("explains a refused key in plain words next to the field", async () => {
    // Given the connect screen
    start(new FakeHerald(), "/", null);
    // When a key the API refuses is entered
    type("API key", "hrld_wrong");
    fireEvent.click(screen.getByRole("button", { name: "Connect" }));
    // Then the field says so, without the API's developer wording
    const field = screen.getByLabelText("API key");
    await waitFor(() => expect(field.getAttribute("aria-invalid")).toBe("true"));
    expect(document.getElementById("api-key-error")?.textContent).toBe(
      "This key was refused: check that it is complete and has not been revoked.",
    );
    expect(document.body.textContent).not.toContain("Authorization");
  });

  it("goes back to connect, saying why, when the key is refused", async () => {
    start(new FakeHerald(), "/", "hrld_revoked");

    const reason = await screen.findByText(/Herald no longer accepts your API key/);

    expect(reason.textContent).toBe(
      "Herald no longer accepts your API key (it may have been revoked). Connect again.",
    );
    expect(sessionStorage.getItem("herald.apiKey")).toBeNull();
    expect(document.activeElement).toBe(screen.getByRole("heading", { name: "Connect to Herald" }));
  });
});
