import { describe, expect, it, vi } from "vitest";

import { HeraldApi } from "../src/api/client";
import { ApiProblem, NetworkError, retryAfterSeconds } from "../src/api/errors";
import { aMessage, API, jsonResponse, problemResponse } from "./fixtures";

function apiAnswering(...responses: Response[]) {
  const fetch = vi.fn<typeof globalThis.fetch>();
  for (const response of responses) fetch.mockResolvedValueOnce(response);
  return { api: new HeraldApi(API, "hrld_key_secret", fetch), fetch };
}

function requestOf(fetch: ReturnType<typeof vi.fn<typeof globalThis.fetch>>, call = 0) {
  const [url, init] = fetch.mock.calls[call] ?? [];
  return { url: String(url), init: init ?? {}, headers: new Headers(init?.headers) };
}

const draft = { to: ["ann@example.org"], cc: [], bcc: [], subject: "Hi", text: "x", html: null };

describe("HeraldApi", () => {
  it("sends the API key as a bearer token", async () => {
    // Given
    const { api, fetch } = apiAnswering(jsonResponse({ items: [], next_cursor: null }));
    // When
    await api.listMessages();
    // Then
    const { url, headers } = requestOf(fetch);
    expect(url).toBe(`${API}/v1/messages`);
    expect(headers.get("Authorization")).toBe("Bearer hrld_key_secret");
  });

  it("creates a message with its idempotency key and JSON body", async () => {
    // Given
    const created = aMessage();
    const { api, fetch } = apiAnswering(jsonResponse(created, 201));
    // When
    const result = await api.createMessage(draft, "key-1");
    // Then
    const { url, init, headers } = requestOf(fetch);
    expect([url, init.method]).toEqual([`${API}/v1/messages`, "POST"]);
    expect(headers.get("Idempotency-Key")).toBe("key-1");
    expect(headers.get("Content-Type")).toBe("application/json");
    expect(JSON.parse(String(init.body))).toEqual(draft);
    expect(result).toEqual({ message: created, replayed: false });
  });

  it("reports a 200 answer to a create as a replay of the first request", async () => {
    const { api } = apiAnswering(jsonResponse(aMessage(), 200));

    const result = await api.createMessage(draft, "key-1");

    expect(result.replayed).toBe(true);
  });

  it("follows next_cursor from one page to the next", async () => {
    // Given two pages of "sent" messages
    const first = aMessage({ id: "a" });
    const second = aMessage({ id: "b" });
    const { api, fetch } = apiAnswering(
      jsonResponse({ items: [first], next_cursor: "eyJjIjoi+/=" }),
      jsonResponse({ items: [second], next_cursor: null }),
    );
    // When
    const page1 = await api.listMessages({ status: "sent", limit: 1 });
    const page2 = await api.listMessages({ status: "sent", limit: 1, cursor: page1.next_cursor });
    // Then
    expect(requestOf(fetch, 0).url).toBe(`${API}/v1/messages?status=sent&limit=1`);
    expect(requestOf(fetch, 1).url).toBe(
      `${API}/v1/messages?status=sent&limit=1&cursor=eyJjIjoi%2B%2F%3D`,
    );
    expect([...page1.items, ...page2.items]).toEqual([first, second]);
    expect(page2.next_cursor).toBeNull();
  });

  it("reads and cancels one message by its id", async () => {
    const { api, fetch } = apiAnswering(
      jsonResponse(aMessage()),
      jsonResponse(aMessage({ status: "canceled" })),
    );

    await api.getMessage("0b7c");
    const canceled = await api.cancelMessage("0b7c");

    expect(requestOf(fetch, 0).url).toBe(`${API}/v1/messages/0b7c`);
    expect(requestOf(fetch, 1).init.method).toBe("DELETE");
    expect(canceled.status).toBe("canceled");
  });

  it("reads a message from an API without delivery reports as one with none yet", async () => {
    // Given an answer without recipients and events (an API from before them)
    const { recipients: _r, events: _e, ...older } = aMessage({ status: "sent" });
    const { api } = apiAnswering(jsonResponse(older));
    // When
    const message = await api.getMessage("0b7c");
    // Then
    expect(message.recipients).toEqual([]);
    expect(message.events).toEqual([]);
  });

  it("pages through the suppression list with the cursor", async () => {
    const { api, fetch } = apiAnswering(jsonResponse({ items: [], next_cursor: null }));

    await api.listSuppressions({ limit: 50, cursor: "c+/=" });

    expect(requestOf(fetch).url).toBe(`${API}/v1/suppressions?limit=50&cursor=c%2B%2F%3D`);
  });

  it("removes a suppressed address, encoded in the path", async () => {
    const { api, fetch } = apiAnswering(new Response(null, { status: 204 }));

    await api.removeSuppression("ann+news@example.org");

    const { url, init } = requestOf(fetch);
    expect([url, init.method]).toEqual([
      `${API}/v1/suppressions/ann%2Bnews%40example.org`,
      "DELETE",
    ]);
  });

  it("keeps the suppressed addresses of a recipient-suppressed problem", async () => {
    const { api } = apiAnswering(
      problemResponse({
        type: "urn:herald:problem:recipient-suppressed",
        title: "Recipient Suppressed",
        status: 422,
        detail: "bob@example.org is on this tenant's suppression list",
        suppressed: ["bob@example.org", 7],
      }),
    );

    const error = await api.createMessage(draft, "key-1").catch((caught: unknown) => caught);

    expect(error).toMatchObject({ kind: "recipient-suppressed", suppressed: ["bob@example.org"] });
  });

  it("turns a problem+json answer into an ApiProblem with its field errors", async () => {
    // Given
    const { api } = apiAnswering(
      problemResponse({
        type: "urn:herald:problem:validation-error",
        title: "Invalid Request",
        status: 422,
        detail: "body.to.0: value is not a valid email address",
        instance: "/v1/messages",
        request_id: "req-1",
        errors: [{ location: "body.to.0", message: "value is not a valid email address" }],
      }),
    );
    // When
    const error = await api.createMessage(draft, "key-1").catch((caught: unknown) => caught);
    // Then
    expect(error).toBeInstanceOf(ApiProblem);
    expect(error).toMatchObject({
      status: 422,
      kind: "validation-error",
      title: "Invalid Request",
      detail: "body.to.0: value is not a valid email address",
      requestId: "req-1",
      errors: [{ location: "body.to.0", message: "value is not a valid email address" }],
    });
  });

  it("keeps a problem's Retry-After, so the app can say when to try again", async () => {
    const { api } = apiAnswering(
      problemResponse(
        {
          type: "urn:herald:problem:rate-limited",
          title: "Too Many Requests",
          status: 429,
          detail: "over 50 requests/s for this key",
        },
        { "Retry-After": "3" },
      ),
    );

    const error = await api.listMessages().catch((caught: unknown) => caught);

    expect(error).toMatchObject({ status: 429, kind: "rate-limited", retryAfterSeconds: 3 });
  });

  it.each([
    ["7", 7],
    ["Mon, 30 Nov 2026 08:01:30 GMT", 90],
    ["Mon, 30 Nov 2026 07:00:00 GMT", 0],
    ["soon", null],
    [null, null],
  ])("reads Retry-After %j as %j seconds", (value, seconds) => {
    expect(retryAfterSeconds(value, new Date("2026-11-30T08:00:00Z"))).toBe(seconds);
  });

  it("explains an error answer that is not a problem, such as a proxy's HTML page", async () => {
    const { api } = apiAnswering(
      new Response("<html>Bad Gateway</html>", {
        status: 502,
        statusText: "Bad Gateway",
        headers: { "Content-Type": "text/html", "X-Request-ID": "req-2" },
      }),
    );

    const error = await api.listMessages().catch((caught: unknown) => caught);

    expect(error).toMatchObject({
      status: 502,
      detail: "the API answered 502 Bad Gateway without details",
      requestId: "req-2",
      errors: [],
    });
  });

  it("reports a request that never got an answer as a NetworkError", async () => {
    const fetch = vi
      .fn<typeof globalThis.fetch>()
      .mockRejectedValue(new TypeError("Failed to fetch"));
    const api = new HeraldApi(API, "key", fetch);

    const error = await api.getMessage("x").catch((caught: unknown) => caught);

    expect(error).toBeInstanceOf(NetworkError);
    expect(error).toMatchObject({ url: `${API}/v1/messages/x` });
  });

  it("refuses a successful answer that is not JSON", async () => {
    const { api } = apiAnswering(new Response("OK", { status: 200 }));

    const error = await api.getMessage("x").catch((caught: unknown) => caught);

    expect(error).toBeInstanceOf(ApiProblem);
    expect(error).toMatchObject({ detail: "the API answered with something that is not JSON" });
  });
});
