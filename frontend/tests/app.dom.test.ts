// @vitest-environment jsdom
import { fireEvent, screen, waitFor, within } from "@testing-library/dom";
import { afterEach, describe, expect, it, vi } from "vitest";

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
function start(herald: FakeHerald, path: string, apiKey: string | null = herald.apiKey) {
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
    now: () => new Date("2026-11-30T08:00:00Z"),
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
