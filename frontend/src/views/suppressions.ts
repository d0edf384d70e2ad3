/**
 * The addresses this tenant's emails no longer go to (a permanent bounce or a complaint
 * put them there), and taking one off the list after confirming.
 */

import { ApiProblem } from "../api/errors";
import type { Suppression, SuppressionReason } from "../api/types";
import { messagePath } from "../router";
import { formatDateTime } from "../time";
import { breakableAddress, h, setMessage } from "./dom";
import type { View, ViewContext } from "./view";

const PAGE_SIZE = 50;

const REASONS: Record<SuppressionReason, string> = {
  bounce: "Bounced",
  complaint: "Marked as spam",
};

export function suppressionsView(ctx: ViewContext): View {
  let items: Suppression[] = [];
  let nextCursor: string | null = null;
  let disposed = false;

  const heading = h("h1", { id: "suppressions-title", tabindex: -1 }, "Suppressions");
  const intro = h(
    "p",
    {},
    "Herald refuses to send to these addresses: an email to each bounced permanently or was " +
      "marked as spam, and sending again would harm your reputation with mail providers. " +
      "Remove an address only when you know it works again.",
  );
  const zone = h("p", { id: "suppressions-zone", class: "hint" }, `Times in ${ctx.timeZone}.`);
  const state = h("p", { class: "list-state", role: "status" });
  const retry = h("button", { type: "button", class: "button", hidden: true }, "Try again");
  const rows = h("tbody");
  const table = h(
    "div",
    {
      class: "table-scroll",
      role: "region",
      "aria-labelledby": "suppressions-title",
      tabindex: 0,
      hidden: true,
    },
    h(
      "table",
      { "aria-labelledby": "suppressions-title", "aria-describedby": "suppressions-zone" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ...["Address", "Reason", "Since", "Detail", "Action"].map((column) =>
            h("th", { scope: "col" }, column),
          ),
        ),
      ),
      rows,
    ),
  );
  const removeError = h("p", { class: "field-error", role: "alert", hidden: true });
  const more = h("button", { type: "button", class: "button", hidden: true }, "Load more");

  function row(suppression: Suppression): HTMLTableRowElement {
    // "Remove ann@example.org" to a screen reader, whose list of buttons shows no rows; it
    // starts with the visible word, so speech control finds it by what it shows.
    const remove = h(
      "button",
      {
        type: "button",
        class: "button button-quiet",
        "aria-label": `Remove ${suppression.address}`,
      },
      "Remove",
    );
    remove.addEventListener("click", () => void removeOne(suppression, remove));
    return h(
      "tr",
      {},
      h("th", { scope: "row" }, breakableAddress(suppression.address)),
      h("td", {}, REASONS[suppression.reason] ?? suppression.reason),
      h(
        "td",
        {},
        h(
          "time",
          { datetime: suppression.created_at },
          formatDateTime(suppression.created_at, ctx.timeZone),
        ),
      ),
      h(
        "td",
        {},
        suppression.detail ?? "",
        suppression.message_id
          ? h(
              "span",
              { class: "cell-link" },
              h("a", { href: messagePath(suppression.message_id) }, "The email"),
            )
          : null,
      ),
      h("td", {}, remove),
    );
  }

  function show(next: Suppression[], cursor: string | null): void {
    items = next;
    nextCursor = cursor;
    rows.replaceChildren(...items.map(row));
    table.hidden = items.length === 0;
    zone.hidden = table.hidden;
    more.hidden = nextCursor === null;
    setMessage(state, items.length === 0 ? "No suppressed addresses." : null);
  }

  async function load(): Promise<void> {
    setMessage(state, "Loading the suppression list…");
    retry.hidden = true;
    try {
      const page = await ctx.api.listSuppressions({ limit: PAGE_SIZE });
      if (disposed) return;
      show(page.items, page.next_cursor);
    } catch (error) {
      if (disposed) return;
      setMessage(state, ctx.reportFailure(error));
      retry.hidden = false;
    }
  }

  async function loadMore(): Promise<void> {
    if (nextCursor === null) return;
    more.disabled = true;
    try {
      const page = await ctx.api.listSuppressions({ limit: PAGE_SIZE, cursor: nextCursor });
      if (disposed) return;
      const known = new Set(items.map((item) => item.address));
      const added = page.items.filter((item) => !known.has(item.address));
      show([...items, ...added], page.next_cursor);
      ctx.announce(`${added.length} more addresses loaded.`);
    } catch (error) {
      if (!disposed) setMessage(removeError, ctx.reportFailure(error));
    } finally {
      more.disabled = false;
    }
  }

  async function removeOne(suppression: Suppression, button: HTMLButtonElement): Promise<void> {
    const question =
      `Remove ${suppression.address} from the suppression list? ` +
      "Herald will send to it again, and another bounce or complaint will count against you.";
    if (!ctx.confirm(question)) return;
    button.disabled = true;
    setMessage(removeError, null);
    try {
      await ctx.api.removeSuppression(suppression.address);
    } catch (error) {
      if (disposed) return;
      // Already gone (removed elsewhere meanwhile): the list should say so too.
      const gone = error instanceof ApiProblem && error.status === 404;
      if (!gone) {
        button.disabled = false;
        setMessage(removeError, ctx.reportFailure(error));
        return;
      }
    }
    if (disposed) return;
    const index = items.indexOf(suppression);
    show(
      items.filter((item) => item !== suppression),
      nextCursor,
    );
    ctx.announce(`${suppression.address} is no longer suppressed.`);
    // The keyboard goes on to the next row's button (or the one before, or the heading).
    const buttons = [...rows.querySelectorAll("button")];
    (buttons[index] ?? buttons[index - 1] ?? heading).focus();
  }

  retry.addEventListener("click", () => void load());
  more.addEventListener("click", () => void loadMore());
  const element = h(
    "div",
    { class: "view" },
    heading,
    intro,
    zone,
    state,
    retry,
    removeError,
    table,
    more,
  );
  void load();
  return {
    title: "Suppressions",
    element,
    heading,
    dispose() {
      disposed = true;
    },
  };
}
