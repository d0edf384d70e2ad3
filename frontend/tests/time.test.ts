import { describe, expect, it } from "vitest";

import {
  formatDateTime,
  formatOffset,
  parseLocalDateTime,
  timeZoneLabel,
  toLocalDateTimeValue,
  zonedDateTime,
} from "../src/time";

function zoned(value: string, timeZone: string) {
  const wall = parseLocalDateTime(value);
  if (!wall) throw new Error(`not a local date-time: ${value}`);
  return zonedDateTime(wall, timeZone);
}

describe("timeZoneLabel", () => {
  it.each([
    ["Europe/Paris", "2026-12-01T12:00:00Z", "Europe/Paris (UTC+01:00)"],
    ["Europe/Paris", "2026-07-01T12:00:00Z", "Europe/Paris (UTC+02:00)"],
    ["America/New_York", "2026-12-01T12:00:00Z", "America/New_York (UTC-05:00)"],
    ["Asia/Kolkata", "2026-12-01T12:00:00Z", "Asia/Kolkata (UTC+05:30)"],
    ["UTC", "2026-12-01T12:00:00Z", "UTC (UTC+00:00)"],
  ])("names %s at %s with its offset then", (timeZone, instant, label) => {
    expect(timeZoneLabel(timeZone, new Date(instant))).toBe(label);
  });

  it("writes negative offsets with their minutes", () => {
    expect(formatOffset(-210)).toBe("-03:30");
  });
});

describe("local date-time to RFC 3339", () => {
  it("adds the zone's winter offset to a winter date", () => {
    const result = zoned("2026-12-01T09:00", "Europe/Paris");

    expect(result?.rfc3339).toBe("2026-12-01T09:00:00+01:00");
    expect(result?.instant.toISOString()).toBe("2026-12-01T08:00:00.000Z");
  });

  it("adds the zone's summer offset to a summer date", () => {
    expect(zoned("2026-07-01T09:00", "Europe/Paris")?.rfc3339).toBe("2026-07-01T09:00:00+02:00");
  });

  it("works west of Greenwich and with seconds", () => {
    expect(zoned("2026-12-01T09:00:30", "America/New_York")?.rfc3339).toBe(
      "2026-12-01T09:00:30-05:00",
    );
  });

  it("has no answer for a time the clocks skip in spring", () => {
    // Paris goes from 02:00 to 03:00 on 29 March 2026.
    expect(zoned("2026-03-29T02:30", "Europe/Paris")).toBeNull();
  });

  it("takes the first of a time that happens twice in autumn", () => {
    // Paris goes from 03:00 back to 02:00 on 25 October 2026.
    const result = zoned("2026-10-25T02:30", "Europe/Paris");

    expect(result?.rfc3339).toBe("2026-10-25T02:30:00+02:00");
    expect(result?.instant.toISOString()).toBe("2026-10-25T00:30:00.000Z");
  });

  it.each(["", "2026-12-01", "2026-12-01 09:00", "2026-02-30T10:00", "2026-12-01T24:00"])(
    "does not read %j as a local date-time",
    (value) => {
      expect(parseLocalDateTime(value)).toBeNull();
    },
  );

  it("gives the datetime-local value of an instant in a zone", () => {
    expect(toLocalDateTimeValue(new Date("2026-12-01T08:00:00Z"), "Europe/Paris")).toBe(
      "2026-12-01T09:00",
    );
  });

  it("shows an API time in the person's zone", () => {
    expect(formatDateTime("2026-12-01T08:00:00Z", "Europe/Paris", { locale: "en-GB" })).toBe(
      "1 Dec 2026, 09:00",
    );
  });

  it("shows an API time to the second when asked", () => {
    expect(
      formatDateTime("2026-12-01T08:00:05Z", "Europe/Paris", { locale: "en-GB", seconds: true }),
    ).toBe("1 Dec 2026, 09:00:05");
  });
});
