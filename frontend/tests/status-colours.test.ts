import { describe, expect, it } from "vitest";

import { MESSAGE_STATUSES, RECIPIENT_STATUSES } from "../src/api/types";
import styles from "../src/styles.css?raw";

/** The custom properties of `:root`: `--danger` -> `#b42318`. */
function rootVariables(css: string): Map<string, string> {
  const root = /:root\s*{([^}]*)}/.exec(css)?.[1] ?? "";
  return new Map([...root.matchAll(/(--[\w-]+):\s*([^;]+);/g)].map((m) => [m[1]!, m[2]!.trim()]));
}

/** The text colour each `.status-<name>` rule gives, its variables resolved. */
function statusColours(css: string): Map<string, string> {
  const variables = rootVariables(css);
  const colours = new Map<string, string>();
  for (const [, selectors, body] of css.matchAll(/([^{}]+){([^}]*)}/g)) {
    const colour = /(?:^|[;\s])color:\s*([^;]+);/.exec(body!)?.[1]?.trim();
    if (!colour) continue;
    const resolved = colour.replace(
      /^var\((--[\w-]+)\)$/,
      (_, name: string) => variables.get(name) ?? name,
    );
    for (const [, status] of selectors!.matchAll(/\.status-([\w-]+)/g))
      colours.set(status!, resolved);
  }
  return colours;
}

/** WCAG 2's contrast ratio of two #rrggbb colours. */
function contrast(a: string, b: string): number {
  const luminance = (hex: string): number => {
    const [r, g, b] = [1, 3, 5].map((i) => {
      const channel = parseInt(hex.slice(i, i + 2), 16) / 255;
      return channel <= 0.03928 ? channel / 12.92 : ((channel + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r! + 0.7152 * g! + 0.0722 * b!;
  };
  const [light, dark] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (light! + 0.05) / (dark! + 0.05);
}

describe("status badges", () => {
  const colours = statusColours(styles);
  const variables = rootVariables(styles);
  const backgrounds = [variables.get("--surface")!, variables.get("--background")!];

  it.each([...new Set([...MESSAGE_STATUSES, ...RECIPIENT_STATUSES])])(
    "colours %s with at least WCAG AA's 4.5:1 contrast on every background",
    (status) => {
      const colour = colours.get(status);

      expect(colour).toMatch(/^#[0-9a-f]{6}$/i);
      for (const background of backgrounds) {
        expect(contrast(colour!, background)).toBeGreaterThanOrEqual(4.5);
      }
    },
  );
});
