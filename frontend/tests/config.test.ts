import { describe, expect, it, vi } from "vitest";

import { CONFIG_PATH, ConfigError, loadConfig } from "../src/config";
import { jsonResponse } from "./fixtures";

function serving(response: Response) {
  return vi.fn<typeof fetch>().mockResolvedValue(response);
}

describe("loadConfig", () => {
  it("reads the API base URL, without its trailing slash, from /config.json", async () => {
    // Given
    const fetch = serving(jsonResponse({ apiBaseUrl: "https://api.example.com/herald/" }));
    // When
    const config = await loadConfig(fetch);
    // Then
    expect(config).toEqual({ apiBaseUrl: "https://api.example.com/herald" });
    expect(fetch).toHaveBeenCalledWith(CONFIG_PATH, { cache: "no-store" });
  });

  it("says the file is missing when the server answers 404", async () => {
    const fetch = serving(new Response("Not Found", { status: 404 }));

    await expect(loadConfig(fetch)).rejects.toThrow(
      new ConfigError("/config.json is missing: the server answered 404."),
    );
  });

  it("says the file could not be downloaded when the network fails", async () => {
    const fetch = vi.fn<typeof globalThis.fetch>().mockRejectedValue(new TypeError("offline"));

    await expect(loadConfig(fetch)).rejects.toThrow(/could not be downloaded/);
  });

  it.each([
    ["not JSON", new Response("<html>", { status: 200 }), /is not valid JSON/],
    ["no apiBaseUrl", jsonResponse({ api: "x" }), /has no "apiBaseUrl" string/],
    ["a relative URL", jsonResponse({ apiBaseUrl: "/api" }), /not an absolute URL/],
    ["another scheme", jsonResponse({ apiBaseUrl: "ftp://api.example.com" }), /must be an http/],
    ["a query", jsonResponse({ apiBaseUrl: "https://api.example.com/?x=1" }), /query/],
  ])("rejects a file with %s", async (_case, response, message) => {
    const error = await loadConfig(serving(response)).catch((caught: unknown) => caught);

    expect(error).toBeInstanceOf(ConfigError);
    expect(String(error)).toMatch(message);
  });
});
