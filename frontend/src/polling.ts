/**
 * Live status without hammering the API: poll quickly while things change, back off while
 * they do not, and not at all while nobody is looking at the tab.
 */

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 2_000, maxMs: 30_000 };

/** The wait between polls: the initial delay after a change, doubling (to a cap) without one. */
export class Backoff {
  private readonly options: BackoffOptions;
  private delay: number;

  constructor(options: BackoffOptions = DEFAULT_BACKOFF) {
    this.options = options;
    this.delay = options.initialMs;
  }

  /** The wait before the first poll, or the one after a change. */
  get current(): number {
    return this.delay;
  }

  /** The wait before the next poll, given whether the last one saw a change. */
  next(changed: boolean): number {
    this.delay = changed ? this.options.initialMs : Math.min(this.delay * 2, this.options.maxMs);
    return this.delay;
  }

  reset(): void {
    this.delay = this.options.initialMs;
  }
}

/** The part of `document` the poller needs, so tests can hide and show a fake tab. */
export interface Visibility {
  readonly visibilityState: DocumentVisibilityState;
  addEventListener(type: "visibilitychange", listener: () => void): void;
  removeEventListener(type: "visibilitychange", listener: () => void): void;
}

/**
 * Calls `poll` with back-off until stopped. `poll` resolves to whether it saw a change and
 * shows its own errors; a rejected poll only counts as "no change".
 */
export class Poller {
  private readonly poll: () => Promise<boolean>;
  private readonly backoff: Backoff;
  private readonly visibility: Visibility;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private running = false;
  private stopped = true;

  constructor(
    poll: () => Promise<boolean>,
    options: { backoff?: Backoff; visibility?: Visibility } = {},
  ) {
    this.poll = poll;
    this.backoff = options.backoff ?? new Backoff();
    this.visibility = options.visibility ?? document;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.visibility.addEventListener("visibilitychange", this.onVisibilityChange);
    this.backoff.reset();
    this.schedule(this.backoff.current);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.visibility.removeEventListener("visibilitychange", this.onVisibilityChange);
  }

  private schedule(delayMs: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.run(), delayMs);
  }

  private async run(): Promise<void> {
    // A hidden tab's timers still fire (throttled); the visibility handler resumes polling.
    if (this.visibility.visibilityState === "hidden") return;
    this.running = true;
    let changed: boolean;
    try {
      changed = await this.poll();
    } catch {
      changed = false; // the view has shown the error; here it only slows polling down
    } finally {
      this.running = false;
    }
    if (!this.stopped) this.schedule(this.backoff.next(changed));
  }

  // An arrow function, so the same listener is added and removed.
  private readonly onVisibilityChange = (): void => {
    if (this.stopped) return;
    if (this.visibility.visibilityState === "hidden") {
      clearTimeout(this.timer);
    } else if (!this.running) {
      // Back from another tab: the page is probably stale, so look now.
      this.backoff.reset();
      void this.run();
    }
  };
}
