/**
 * Wall-clock times in a named time zone. The compose form takes a local date and time
 * (an <input type="datetime-local"> value) and the API wants RFC 3339 with an offset; the
 * offset depends on the date (daylight saving), so it is worked out per date with Intl.
 */

/** A date and time on a wall clock, without a zone. Months are 1-12. */
export interface WallTime {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
}

/** A wall-clock time placed in a zone: the RFC 3339 text the API takes, and its instant. */
export interface ZonedDateTime {
  rfc3339: string;
  instant: Date;
}

const MINUTE_MS = 60_000;
const DAY_MS = 86_400_000;

export function browserTimeZone(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone;
}

// Building a DateTimeFormat costs far more than using one, and zonedDateTime uses it thrice.
const wallClocks = new Map<string, Intl.DateTimeFormat>();

function wallClock(timeZone: string): Intl.DateTimeFormat {
  let format = wallClocks.get(timeZone);
  if (!format) {
    format = new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    });
    wallClocks.set(timeZone, format);
  }
  return format;
}

/** What a clock in `timeZone` shows at `instant`. */
export function wallTimeAt(instant: Date, timeZone: string): WallTime {
  const parts = wallClock(timeZone).formatToParts(instant);
  const part = (type: Intl.DateTimeFormatPartTypes): number =>
    Number(parts.find((p) => p.type === type)?.value);
  return {
    year: part("year"),
    month: part("month"),
    day: part("day"),
    hour: part("hour"),
    minute: part("minute"),
    second: part("second"),
  };
}

function wallTimeAsUtc(wall: WallTime): number {
  return Date.UTC(wall.year, wall.month - 1, wall.day, wall.hour, wall.minute, wall.second);
}

/** The zone's offset from UTC at `instant`, in minutes, east positive (Paris in winter: 60). */
export function offsetMinutes(instant: Date, timeZone: string): number {
  const wholeSecond = Math.floor(instant.getTime() / 1000) * 1000;
  return Math.round((wallTimeAsUtc(wallTimeAt(instant, timeZone)) - wholeSecond) / MINUTE_MS);
}

/** An offset as RFC 3339 writes it: "+01:00", "-03:30", "+00:00". */
export function formatOffset(minutes: number): string {
  const sign = minutes < 0 ? "-" : "+";
  const absolute = Math.abs(minutes);
  return `${sign}${pad(Math.floor(absolute / 60))}:${pad(absolute % 60)}`;
}

/** The zone as a person reads it at that instant: "Europe/Paris (UTC+01:00)". */
export function timeZoneLabel(timeZone: string, instant: Date): string {
  return `${timeZone} (UTC${formatOffset(offsetMinutes(instant, timeZone))})`;
}

/** Reads an <input type="datetime-local"> value ("2026-12-01T09:00", seconds optional). */
export function parseLocalDateTime(value: string): WallTime | null {
  const match = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?$/.exec(value);
  if (!match) return null;
  const field = (index: number): number => Number(match[index] ?? 0);
  const wall = {
    year: field(1),
    month: field(2),
    day: field(3),
    hour: field(4),
    minute: field(5),
    second: field(6),
  };
  // Date.UTC rolls 31 February over to March: a value that does not round-trip is not a date.
  const check = new Date(wallTimeAsUtc(wall));
  const rolledOver =
    check.getUTCFullYear() !== wall.year ||
    check.getUTCMonth() + 1 !== wall.month ||
    check.getUTCDate() !== wall.day ||
    check.getUTCHours() !== wall.hour ||
    check.getUTCMinutes() !== wall.minute;
  return rolledOver ? null : wall;
}

/** The datetime-local value of an instant's wall-clock time in a zone, to the minute. */
export function toLocalDateTimeValue(instant: Date, timeZone: string): string {
  const wall = wallTimeAt(instant, timeZone);
  return `${wall.year}-${pad(wall.month)}-${pad(wall.day)}T${pad(wall.hour)}:${pad(wall.minute)}`;
}

/**
 * Places a wall-clock time in a zone. When clocks go back the time happens twice and the
 * first is taken; when they go forward it never happens, and the answer is null.
 */
export function zonedDateTime(wall: WallTime, timeZone: string): ZonedDateTime | null {
  const asUtc = wallTimeAsUtc(wall);
  // A zone changes offset at most once in a day either side, so these are every candidate.
  const offsets = new Set([
    offsetMinutes(new Date(asUtc - DAY_MS), timeZone),
    offsetMinutes(new Date(asUtc + DAY_MS), timeZone),
  ]);
  const instants = [...offsets]
    .map((offset) => ({ offset, time: asUtc - offset * MINUTE_MS }))
    .filter(({ offset, time }) => offsetMinutes(new Date(time), timeZone) === offset)
    .sort((a, b) => a.time - b.time);
  const first = instants[0];
  if (!first) return null;
  const date = `${wall.year}-${pad(wall.month)}-${pad(wall.day)}`;
  const time = `${pad(wall.hour)}:${pad(wall.minute)}:${pad(wall.second)}`;
  return { rfc3339: `${date}T${time}${formatOffset(first.offset)}`, instant: new Date(first.time) };
}

/**
 * An API time (RFC 3339) for people: "1 Dec 2026, 09:00" in the given zone, or
 * "1 Dec 2026, 09:00:05" with `seconds` (a message's own page, where the seconds between
 * created, queued and sent matter).
 */
export function formatDateTime(
  rfc3339: string,
  timeZone: string,
  options: { locale?: string; seconds?: boolean } = {},
): string {
  return new Intl.DateTimeFormat(options.locale, {
    dateStyle: "medium",
    timeStyle: options.seconds ? "medium" : "short",
    timeZone,
  }).format(new Date(rfc3339));
}

function pad(value: number): string {
  return String(value).padStart(2, "0");
}
