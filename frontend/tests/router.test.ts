import { describe, expect, it } from "vitest";

import { listPath, messagePath, parseRoute } from "../src/router";

describe("parseRoute", () => {
  it.each([
    ["/", "", { name: "list", status: null }],
    ["/", "?status=sent", { name: "list", status: "sent" }],
    ["/", "?status=bogus", { name: "list", status: null }],
    ["/compose", "", { name: "compose" }],
    ["/suppressions", "", { name: "suppressions" }],
    ["/messages/0b7c%20x", "", { name: "message", id: "0b7c x" }],
    ["/messages/", "", { name: "not-found" }],
    ["/elsewhere", "", { name: "not-found" }],
  ])("reads %s%s", (pathname, search, route) => {
    expect(parseRoute(pathname, search)).toEqual(route);
  });

  it("builds the paths it reads", () => {
    expect(parseRoute("/", new URL(listPath("failed"), "http://x").search)).toEqual({
      name: "list",
      status: "failed",
    });
    expect(parseRoute(messagePath("a/b"), "")).toEqual({ name: "message", id: "a/b" });
  });
});
