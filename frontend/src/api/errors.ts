/** The two ways a request fails: the API answered no, or it could not be reached. */

import type { FieldError } from "./types";

/** An RFC 9457 problem the API answered with (or one made up for a non-problem error). */
export class ApiProblem extends Error {
  readonly status: number;
  /** `urn:herald:problem:<kind>`, or `about:blank` when the answer was not a problem. */
  readonly type: string;
  readonly title: string;
  readonly detail: string;
  /** Each invalid field, for `validation-error` problems; empty otherwise. */
  readonly errors: FieldError[];
  /** Finds the request's log lines on the server. */
  readonly requestId: string | null;
  /**
   * When to try again, from `Retry-After` (429 and 503): seconds from now, or null when
   * the answer had none (or the API does not expose the header to this origin).
   */
  readonly retryAfterSeconds: number | null;
  /** The addresses on the suppression list, for `recipient-suppressed` problems; empty otherwise. */
  readonly suppressed: string[];

  constructor(fields: {
    status: number;
    type: string;
    title: string;
    detail: string;
    errors?: FieldError[];
    requestId?: string | null;
    retryAfterSeconds?: number | null;
    suppressed?: string[];
  }) {
    super(fields.detail);
    this.name = "ApiProblem";
    this.status = fields.status;
    this.type = fields.type;
    this.title = fields.title;
    this.detail = fields.detail;
    this.errors = fields.errors ?? [];
    this.requestId = fields.requestId ?? null;
    this.retryAfterSeconds = fields.retryAfterSeconds ?? null;
    this.suppressed = fields.suppressed ?? [];
  }

  /** The kind after `urn:herald:problem:`, e.g. `validation-error`. */
  get kind(): string {
    return this.type.replace(/^urn:herald:problem:/, "");
  }
}

/** The request never got an answer: offline, DNS, TLS, or a CORS refusal (which browsers hide). */
export class NetworkError extends Error {
  constructor(
    readonly url: string,
    options?: { cause: unknown },
  ) {
    super(`could not reach ${url}`, options);
    this.name = "NetworkError";
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function fieldErrors(value: unknown): FieldError[] {
  if (!Array.isArray(value)) return [];
  return value.filter(
    (item): item is FieldError =>
      isRecord(item) && typeof item["location"] === "string" && typeof item["message"] === "string",
  );
}

function strings(value: unknown): string[] {
  return Array.isArray(value)
    ? value.filter((item): item is string => typeof item === "string")
    : [];
}

/** `Retry-After` as seconds from `now`: either delay-seconds or an HTTP date (RFC 9110). */
export function retryAfterSeconds(value: string | null, now: Date = new Date()): number | null {
  if (value === null) return null;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text);
  const at = Date.parse(text);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - now.getTime()) / 1000));
}

/**
 * The problem an error response describes. A body that is not a problem (a load balancer's
 * HTML page, say) still yields one, so every caller has a `detail` to show.
 */
export function problemFrom(response: Response, body: unknown): ApiProblem {
  const requestId = response.headers.get("X-Request-ID");
  const retryAfter = retryAfterSeconds(response.headers.get("Retry-After"));
  if (isRecord(body) && typeof body["detail"] === "string") {
    return new ApiProblem({
      status: typeof body["status"] === "number" ? body["status"] : response.status,
      type: typeof body["type"] === "string" ? body["type"] : "about:blank",
      title: typeof body["title"] === "string" ? body["title"] : response.statusText,
      detail: body["detail"],
      errors: fieldErrors(body["errors"]),
      requestId: typeof body["request_id"] === "string" ? body["request_id"] : requestId,
      retryAfterSeconds: retryAfter,
      suppressed: strings(body["suppressed"]),
    });
  }
  const status = `${response.status} ${response.statusText}`.trim();
  return new ApiProblem({
    status: response.status,
    type: "about:blank",
    title: response.statusText,
    detail: `the API answered ${status} without details`,
    requestId,
    retryAfterSeconds: retryAfter,
  });
}
