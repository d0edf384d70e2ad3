/** Builders shared by the tests: API bodies and fetch responses. */

import type { Message } from "../src/api/types";

export const API = "https://api.example.test";

export function aMessage(overrides: Partial<Message> = {}): Message {
  return {
    id: "0b7c6f1e-3f5d-4a8e-9a43-1f0e8b6d2c11",
    status: "scheduled",
    sender: "herald@example.com",
    to: ["ann@example.org"],
    cc: [],
    bcc: [],
    reply_to: [],
    subject: "Hello",
    text: "Sent by Herald",
    html: null,
    send_at: "2026-12-01T08:00:00Z",
    created_at: "2026-11-30T08:00:00Z",
    updated_at: "2026-11-30T08:00:00Z",
    queued_at: null,
    finished_at: null,
    provider_message_id: null,
    error: null,
    recipients: [],
    events: [],
    ...overrides,
  };
}

export function jsonResponse(body: unknown, status = 200, headers: Record<string, string> = {}) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json", ...headers },
  });
}

export function problemResponse(
  problem: Record<string, unknown>,
  headers: Record<string, string> = {},
) {
  return new Response(JSON.stringify(problem), {
    status: Number(problem["status"]),
    headers: { "Content-Type": "application/problem+json", ...headers },
  });
}
