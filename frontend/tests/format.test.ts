import { describe, expect, it } from "vitest";

import { ApiProblem, NetworkError } from "../src/api/errors";
import {
  describeFailure,
  duration,
  eventDetail,
  eventLabel,
  recipientsSummary,
  statusMoment,
} from "../src/views/format";
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
  const problem = (fields: Partial<ConstructorParameters<typeof ApiProblem>[0]>) =>
    new ApiProblem({ status: 400, type: "about:blank", title: "", detail: "", ...fields });

  it("says in plain words that a message can no longer be canceled", () => {
    const refused = problem({
      status: 409,
      type: "urn:herald:problem:not-cancelable",
      title: "Not Cancelable",
      detail: "the message is sent; only a scheduled message can be canceled",
      requestId: "req-9",
    });

    expect(describeFailure(refused, API)).toBe(
      "It is too late to cancel this email: it is no longer scheduled.",
    );
  });

  it("never shows the developer's wording of a refused key", () => {
    const refused = problem({
      status: 401,
      type: "urn:herald:problem:unauthorized",
      detail: "send an active API key as 'Authorization: Bearer <key>'",
    });

    expect(describeFailure(refused, API)).toBe(
      "Herald did not accept this API key: check that it is complete and has not been revoked.",
    );
  });

  it.each([
    [
      { status: 429, type: "urn:herald:problem:rate-limited", retryAfterSeconds: 1 },
      "Too many requests in a short time. Try again in 1 second.",
    ],
    [
      { status: 429, type: "urn:herald:problem:quota-exceeded", retryAfterSeconds: 19_000 },
      "Your account has sent its daily quota of emails. Try again in 5 hours 17 minutes.",
    ],
    [
      { status: 429, type: "urn:herald:problem:quota-exceeded" },
      "Your account has sent its daily quota of emails. " +
        "Try again tomorrow (the quota restarts at midnight UTC).",
    ],
    [
      { status: 503, type: "urn:herald:problem:overloaded", retryAfterSeconds: 90 },
      "Herald is busy right now. Try again in 2 minutes.",
    ],
    [
      { status: 503, type: "urn:herald:problem:overloaded" },
      "Herald is busy right now. Try again in a few seconds.",
    ],
  ])("says when to try again after %j", (fields, sentence) => {
    expect(describeFailure(problem(fields), API)).toBe(sentence);
  });

  it("gives the request id of a server error as a reference, and nothing more technical", () => {
    const failed = problem({
      status: 500,
      type: "urn:herald:problem:internal-error",
      detail: "an unexpected error; quote the request id",
      requestId: "req-7",
    });

    expect(describeFailure(failed, API)).toBe(
      "Something went wrong inside Herald. Try again in a moment. " +
        "If it keeps happening, give this reference to whoever runs Herald: req-7.",
    );
  });

  it("turns the detail of any other problem into a sentence", () => {
    const other = problem({ status: 405, detail: "method not allowed" });

    expect(describeFailure(other, API)).toBe("Method not allowed.");
  });

  it.each([
    [["bob@example.org"], "bob@example.org is on your suppression list", "Remove it from"],
    [["a@example.org", "b@example.org"], "a@example.org, b@example.org are on", "Remove them"],
  ])("names the suppressed addresses %j and what to do", (suppressed, names, remedy) => {
    const refused = problem({
      status: 422,
      type: "urn:herald:problem:recipient-suppressed",
      detail: "on the suppression list",
      suppressed,
    });

    const text = describeFailure(refused, API);

    expect(text).toContain(`Herald did not schedule this email: ${names}`);
    expect(text).toContain(remedy);
  });

  it("hints at a retry when the API could not be reached", () => {
    expect(describeFailure(new NetworkError(`${API}/v1/messages`), API)).toBe(
      `Could not reach the API at ${API}. Check your connection ` +
        "(or that the API allows this site's origin), then try again.",
    );
  });
});

describe("duration", () => {
  it.each([
    [0, "1 second"],
    [45, "45 seconds"],
    [60, "1 minute"],
    [3_600, "1 hour"],
    [19_000, "5 hours 17 minutes"],
  ])("reads %d seconds as %s", (seconds, text) => {
    expect(duration(seconds)).toBe(text);
  });
});

describe("eventLabel", () => {
  it.each([
    ["Send", "Accepted by SES"],
    ["DeliveryDelay", "Delivery delayed"],
    ["Rendering Failure", "Rendering failed"],
    ["Subscription", "Subscription"],
  ])("reads SES's %s as %s", (type, label) => {
    expect(eventLabel(type)).toBe(label);
  });
});

describe("eventDetail", () => {
  it("reads an event's fields in one line, each recipient with its own fields", () => {
    // Given a bounce's detail as the worker records it
    const detail = {
      bounceType: "Permanent",
      bounceSubType: "General",
      bouncedRecipients: [
        { emailAddress: "a@example.org", diagnosticCode: "smtp; 550 5.1.1 user unknown" },
        { emailAddress: "b@example.org" },
      ],
      reportingMTA: null,
    };

    // When / Then
    expect(eventDetail(detail)).toBe(
      "bounce type: Permanent; bounce sub type: General; bounced recipients: " +
        "a@example.org (diagnostic code: smtp; 550 5.1.1 user unknown), b@example.org",
    );
  });

  it("joins a list of addresses", () => {
    const detail = { recipients: ["a@example.org", "b@example.org"], smtpResponse: "250 OK" };

    expect(eventDetail(detail)).toBe(
      "recipients: a@example.org, b@example.org; smtp response: 250 OK",
    );
  });
});

describe("statusMoment", () => {
  it("dates a delivery report by the message's last change", () => {
    const message = aMessage({
      status: "delivered",
      finished_at: "2026-12-01T08:00:00Z",
      updated_at: "2026-12-01T08:00:05Z",
    });

    expect(statusMoment(message, "UTC")).toMatch(/^Delivered .*8:00/);
  });
});
