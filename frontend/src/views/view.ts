/** What every screen gets from the app, and what it gives back. */

import type { HeraldApi } from "../api/client";

export interface ViewContext {
  api: HeraldApi;
  /** The zone dates are entered and shown in: the browser's. */
  timeZone: string;
  now(): Date;
  /** Goes to another screen; `notice` is shown (and announced) at the top of it. */
  navigate(path: string, notice?: string): void;
  /** Changes the address without changing screen (a filter the screen applied itself). */
  replaceUrl(path: string): void;
  /** Says something to screen-reader users without moving focus. */
  announce(message: string): void;
  confirm(question: string): boolean;
  newIdempotencyKey(): string;
  /**
   * Handles a failed request app-wide (a refused key goes back to connect) and returns
   * the sentence to show where the request was made.
   */
  reportFailure(error: unknown): string;
}

export interface View {
  /** The document title's first part. */
  title: string;
  element: HTMLElement;
  /** Focused after navigation, so keyboard and screen-reader users start at the top. */
  heading: HTMLElement;
  /** Stops the screen's timers; it may still have requests in flight, which it ignores. */
  dispose(): void;
}
