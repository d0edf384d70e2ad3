import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { Backoff, Poller, type Visibility } from "../src/polling";

/** A browser tab the test can hide and show. */
class FakeTab implements Visibility {
  visibilityState: DocumentVisibilityState = "visible";
  private readonly listeners = new Set<() => void>();

  addEventListener(_type: "visibilitychange", listener: () => void): void {
    this.listeners.add(listener);
  }

  removeEventListener(_type: "visibilitychange", listener: () => void): void {
    this.listeners.delete(listener);
  }

  show(state: DocumentVisibilityState): void {
    this.visibilityState = state;
    for (const listener of this.listeners) listener();
  }
}

describe("Backoff", () => {
  it("doubles from 2 s to at most 30 s while nothing changes", () => {
    const backoff = new Backoff();

    const delays = [backoff.current, ...Array.from({ length: 5 }, () => backoff.next(false))];

    expect(delays).toEqual([2_000, 4_000, 8_000, 16_000, 30_000, 30_000]);
  });

  it("goes back to 2 s after a change", () => {
    const backoff = new Backoff();
    backoff.next(false);
    backoff.next(false);

    expect(backoff.next(true)).toBe(2_000);
  });
});

describe("Poller", () => {
  let tab: FakeTab;

  beforeEach(() => {
    vi.useFakeTimers();
    tab = new FakeTab();
  });

  afterEach(() => {
    vi.useRealTimers();
  });

  it("polls less and less often while nothing changes", async () => {
    // Given
    const poll = vi.fn().mockResolvedValue(false);
    const poller = new Poller(poll, { visibility: tab });
    // When
    poller.start();
    // Then: polls at 2 s, then 4 s and 8 s later
    await vi.advanceTimersByTimeAsync(2_000);
    expect(poll).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(3_999);
    expect(poll).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(poll).toHaveBeenCalledTimes(2);
    await vi.advanceTimersByTimeAsync(8_000);
    expect(poll).toHaveBeenCalledTimes(3);
    poller.stop();
  });

  it("polls again 2 s after a change", async () => {
    const poll = vi
      .fn()
      .mockResolvedValueOnce(false)
      .mockResolvedValueOnce(true)
      .mockResolvedValue(false);
    const poller = new Poller(poll, { visibility: tab });

    poller.start();
    await vi.advanceTimersByTimeAsync(2_000 + 4_000); // the second poll sees a change
    await vi.advanceTimersByTimeAsync(2_000);

    expect(poll).toHaveBeenCalledTimes(3);
    poller.stop();
  });

  it("counts a failed poll as no change", async () => {
    const poll = vi.fn().mockRejectedValue(new Error("offline"));
    const poller = new Poller(poll, { visibility: tab });

    poller.start();
    await vi.advanceTimersByTimeAsync(2_000 + 2_000);

    expect(poll).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(poll).toHaveBeenCalledTimes(2);
    poller.stop();
  });

  it("pauses while the tab is hidden and looks at once when it is shown again", async () => {
    // Given
    const poll = vi.fn().mockResolvedValue(false);
    const poller = new Poller(poll, { visibility: tab });
    poller.start();
    // When the tab is hidden for a minute
    tab.show("hidden");
    await vi.advanceTimersByTimeAsync(60_000);
    // Then nothing was polled
    expect(poll).not.toHaveBeenCalled();
    // When it is shown again, it polls at once, then 2 s later
    tab.show("visible");
    await vi.advanceTimersByTimeAsync(0);
    expect(poll).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(4_000);
    expect(poll).toHaveBeenCalledTimes(2);
    poller.stop();
  });

  it("stops for good", async () => {
    const poll = vi.fn().mockResolvedValue(true);
    const poller = new Poller(poll, { visibility: tab });

    poller.start();
    poller.stop();
    tab.show("hidden");
    tab.show("visible");
    await vi.advanceTimersByTimeAsync(60_000);

    expect(poll).not.toHaveBeenCalled();
  });
});
