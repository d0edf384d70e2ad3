/** An in-memory Herald API behind a fetch function, for the DOM tests. */

import type { Message, MessageDraft, Suppression } from "../src/api/types";
import { aMessage, API, jsonResponse, problemResponse } from "./fixtures";

export interface Recorded {
  method: string;
  url: URL;
  headers: Headers;
  body: unknown;
}

export class FakeHerald {
  readonly apiKey = "hrld_good_key";
  /** Newest first, as the API lists them. */
  messages: Message[] = [];
  /** Newest first, as the API lists them. */
  suppressions: Suppression[] = [];
  readonly requests: Recorded[] = [];
  /** When set, the next request is answered with this problem instead. */
  nextProblem: Record<string, unknown> | null = null;
  /** Headers of the next problem answer, such as Retry-After. */
  nextHeaders: Record<string, string> = {};
  /** When set, every request fails as if the network were down. */
  offline = false;

  readonly fetch = async (input: RequestInfo | URL, init: RequestInit = {}): Promise<Response> => {
    const url = new URL(String(input));
    const headers = new Headers(init.headers);
    const method = init.method ?? "GET";
    const body: unknown = typeof init.body === "string" ? JSON.parse(init.body) : undefined;
    this.requests.push({ method, url, headers, body });
    if (this.offline) throw new TypeError("Failed to fetch");
    if (headers.get("Authorization") !== `Bearer ${this.apiKey}`) {
      return problemResponse({
        type: "urn:herald:problem:unauthorized",
        title: "Unauthorized",
        status: 401,
        detail: "send an active API key as 'Authorization: Bearer <key>'",
      });
    }
    if (this.nextProblem) {
      const problem = this.nextProblem;
      const problemHeaders = this.nextHeaders;
      this.nextProblem = null;
      this.nextHeaders = {};
      return problemResponse(problem, problemHeaders);
    }
    return this.route(method, url, body as MessageDraft);
  };

  private route(method: string, url: URL, draft: MessageDraft): Response {
    if (url.href.startsWith(`${API}/v1/suppressions`)) return this.routeSuppressions(method, url);
    if (!url.href.startsWith(`${API}/v1/messages`)) throw new Error(`unexpected ${url.href}`);
    const id = url.pathname.split("/")[3];
    const message = this.messages.find((candidate) => candidate.id === id);
    if (method === "POST") {
      const created = aMessage({
        ...draft,
        id: `m${this.messages.length + 1}`,
        send_at: draft.send_at ?? "2026-11-30T08:00:00Z",
      });
      this.messages.unshift(created);
      return jsonResponse(created, 201);
    }
    if (method === "GET" && id === undefined) {
      const status = url.searchParams.get("status");
      const limit = Number(url.searchParams.get("limit") ?? 20);
      const start = Number(url.searchParams.get("cursor") ?? 0);
      const matching = this.messages.filter((candidate) => !status || candidate.status === status);
      // List items leave the bodies and reports out (MessageSummary), as the API's do.
      const items = matching
        .slice(start, start + limit)
        .map(({ text: _t, html: _h, recipients: _r, events: _e, ...summary }) => summary);
      const more = start + limit < matching.length;
      return jsonResponse({ items, next_cursor: more ? String(start + limit) : null });
    }
    if (!message) throw new Error(`no message ${id}`);
    if (method === "DELETE") {
      this.update(message.id, { status: "canceled" });
      return jsonResponse(this.messages.find((candidate) => candidate.id === id));
    }
    return jsonResponse(message);
  }

  private routeSuppressions(method: string, url: URL): Response {
    const address = url.pathname.split("/")[3];
    if (method === "GET" && address === undefined) {
      const limit = Number(url.searchParams.get("limit") ?? 20);
      const start = Number(url.searchParams.get("cursor") ?? 0);
      const more = start + limit < this.suppressions.length;
      return jsonResponse({
        items: this.suppressions.slice(start, start + limit),
        next_cursor: more ? String(start + limit) : null,
      });
    }
    const key = decodeURIComponent(address ?? "").toLowerCase();
    const before = this.suppressions.length;
    this.suppressions = this.suppressions.filter((suppression) => suppression.address !== key);
    if (this.suppressions.length === before) {
      return problemResponse({
        type: "urn:herald:problem:not-found",
        title: "Not Found",
        status: 404,
        detail: `${key} is not on this tenant's suppression list`,
      });
    }
    return new Response(null, { status: 204 });
  }

  /** What the worker does: moves a message on. */
  update(id: string, changes: Partial<Message>): void {
    this.messages = this.messages.map((message) =>
      message.id === id
        ? { ...message, ...changes, updated_at: new Date().toISOString() }
        : message,
    );
  }
}
