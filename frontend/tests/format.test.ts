import { describe, expect, it } from "vitest";

import { ApiProblem, NetworkError } from "../src/api/errors";
import { describeFailure, recipientsSummary } from "../src/views/format";
import { aMessage, API } from "./fixtures";

describe("recipientsSummary", () => {
  it.each([
    [{ to: ["ann@example.org"] }, "To ann@example.org"],
    [
      { to: ["ann@example.org"], cc: ["bob@example.org", "cy@example.org"] },
      "To ann@example.org and 2 more",
    ],
    [{ to: [], bcc: ["ann@example.org"] }, "Bcc only"],
  ])("summarises %j as %s", (recipients, summary) => {
    expect(recipientsSummary(aMessage(recipients))).toBe(summary);
  });
});

describe("describeFailure", () => {
  it("shows a problem's title and detail with the request id that finds its logs", () => {
    const problem = new ApiProblem({
      status: 409,
      type: "urn:herald:problem:not-cancelable",
      title: "Not Cancelable",
      detail: "the message is sent; only a scheduled message can be canceled",
      requestId: "req-9",
    });

    expect(describeFailure(problem, API)).toBe(
      "Not Cancelable: the message is sent; only a scheduled message can be canceled (request id req-9)",
    );
  });

  it("hints at a retry when the API could not be reached", () => {
    expect(describeFailure(new NetworkError(`${API}/v1/messages`), API)).toBe(
      `Could not reach the API at ${API}. Check your connection ` +
        "(or that the API allows this site's origin), then try again.",
    );
  });
});
