// @vitest-environment jsdom
import { describe, expect, it } from "vitest";

import { breakableAddress, h } from "../src/views/dom";

describe("breakableAddress", () => {
  it("may wrap after the @ and before each dot, and reads as the address", () => {
    const cell = h("td", {}, breakableAddress("bounce@simulator.amazonses.com"));

    expect(cell.innerHTML).toBe("bounce@<wbr>simulator<wbr>.amazonses<wbr>.com");
    expect(cell.textContent).toBe("bounce@simulator.amazonses.com");
  });
});
