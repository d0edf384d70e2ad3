/** A typed client of Herald's /v1 API: one method per route, errors as ApiProblem or NetworkError. */

import { ApiProblem, NetworkError, problemFrom } from "./errors";
import type { Message, MessageDraft, MessagePage, MessageStatus, SuppressionPage } from "./types";

export interface ListQuery {
  status?: MessageStatus | null;
  /** 1 to 100; the API's default is 20. */
  limit?: number;
  /** The previous page's `next_cursor`. */
  cursor?: string | null;
}

export interface PageQuery {
  /** 1 to 100; the API's default is 20. */
  limit?: number;
  /** The previous page's `next_cursor`. */
  cursor?: string | null;
}

export interface Created {
  message: Message;
  /** True when the API returned the message an earlier request with this key created. */
  replayed: boolean;
}

export class HeraldApi {
  private readonly baseUrl: string;
  private readonly apiKey: string;
  private readonly fetch: typeof fetch;

  /**
   * @param baseUrl the API's origin (and path prefix, if any), without a trailing slash
   * @param apiKey sent as `Authorization: Bearer <key>` on every request
   * @param fetchImpl injectable for tests
   */
  constructor(baseUrl: string, apiKey: string, fetchImpl: typeof fetch = fetch) {
    this.baseUrl = baseUrl;
    this.apiKey = apiKey;
    // Called unbound, `window.fetch` throws "Illegal invocation".
    this.fetch = fetchImpl.bind(globalThis);
  }

  /**
   * Schedules an email. The same `idempotencyKey` and body never schedule twice: a retry
   * returns the first message (`replayed`).
   */
  async createMessage(draft: MessageDraft, idempotencyKey: string): Promise<Created> {
    const response = await this.request("POST", "/v1/messages", {
      body: JSON.stringify(draft),
      headers: { "Content-Type": "application/json", "Idempotency-Key": idempotencyKey },
    });
    // 201 is a new message, 200 a replay (the Idempotent-Replayed header is not CORS-exposed).
    return { message: await message(response), replayed: response.status === 200 };
  }

  /** One page of messages, newest first. */
  async listMessages(query: ListQuery = {}): Promise<MessagePage> {
    const params = new URLSearchParams();
    if (query.status) params.set("status", query.status);
    if (query.limit !== undefined) params.set("limit", String(query.limit));
    if (query.cursor) params.set("cursor", query.cursor);
    const search = params.toString();
    return json<MessagePage>(
      await this.request("GET", `/v1/messages${search ? `?${search}` : ""}`),
    );
  }

  /** A message with its bodies, what SES reported per recipient, and its events. */
  async getMessage(id: string): Promise<Message> {
    return message(await this.request("GET", `/v1/messages/${encodeURIComponent(id)}`));
  }

  /** Cancels a message that is still `scheduled`; a 409 problem otherwise. */
  async cancelMessage(id: string): Promise<Message> {
    return message(await this.request("DELETE", `/v1/messages/${encodeURIComponent(id)}`));
  }

  /** One page of the addresses this tenant's emails no longer go to. */
  async listSuppressions(query: PageQuery = {}): Promise<SuppressionPage> {
    const params = new URLSearchParams();
    if (query.limit !== undefined) params.set("limit", String(query.limit));
    if (query.cursor) params.set("cursor", query.cursor);
    const search = params.toString();
    return json<SuppressionPage>(
      await this.request("GET", `/v1/suppressions${search ? `?${search}` : ""}`),
    );
  }

  /** Lets emails go to `address` again; a 404 problem when it was not on the list. */
  async removeSuppression(address: string): Promise<void> {
    await this.request("DELETE", `/v1/suppressions/${encodeURIComponent(address)}`);
  }

  private async request(
    method: string,
    path: string,
    init: { body?: string; headers?: Record<string, string> } = {},
  ): Promise<Response> {
    const url = this.baseUrl + path;
    let response: Response;
    try {
      response = await this.fetch(url, {
        method,
        headers: {
          Accept: "application/json, application/problem+json",
          Authorization: `Bearer ${this.apiKey}`,
          ...init.headers,
        },
        ...(init.body === undefined ? {} : { body: init.body }),
      });
    } catch (error) {
      throw new NetworkError(url, { cause: error });
    }
    if (!response.ok) throw problemFrom(response, await response.json().catch(() => null));
    return response;
  }
}

/**
 * A message as the API answers it. `recipients` and `events` came with delivery reports:
 * an API from before them leaves them out, which reads as "no report yet".
 */
async function message(response: Response): Promise<Message> {
  const body = await json<Partial<Message> & Omit<Message, "recipients" | "events">>(response);
  return { ...body, recipients: body.recipients ?? [], events: body.events ?? [] };
}

/**
 * The body of a successful response. Its shape is the API's OpenAPI contract, which the
 * backend's own tests hold it to; here only "is it JSON at all" is checked.
 */
async function json<T>(response: Response): Promise<T> {
  try {
    return (await response.json()) as T;
  } catch {
    throw new ApiProblem({
      status: response.status,
      type: "about:blank",
      title: "Unexpected Response",
      detail: "the API answered with something that is not JSON",
      requestId: response.headers.get("X-Request-ID"),
    });
  }
}
