/**
 * A few lines instead of a framework: elements are built with `h` and text is only ever
 * set as text (never innerHTML), so nothing the API returns can become markup.
 */

type AttributeValue = string | number | boolean | null | undefined;
export type Child = Node | string | null | undefined | false;

/**
 * `h("a", { href: "/" }, "Home")`. `true` sets a boolean attribute; `false`, null and
 * undefined leave it out, and likewise for children.
 */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Record<string, AttributeValue> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === true) element.setAttribute(name, "");
    else if (value !== false && value !== null && value !== undefined) {
      element.setAttribute(name, String(value));
    }
  }
  element.append(...children.filter((child): child is Node | string => Boolean(child)));
  return element;
}

/** Shows a message in an element that is hidden while it has none. */
export function setMessage(element: HTMLElement, message: string | null): void {
  element.textContent = message ?? "";
  element.hidden = message === null;
}

/**
 * An email address that may wrap after its "@" and before each dot of its domain, so a
 * table column of addresses is as narrow as their longest part rather than the longest one.
 */
export function breakableAddress(address: string): DocumentFragment {
  const fragment = document.createDocumentFragment();
  address.split(/(?<=@)|(?=\.)/).forEach((part, index) => {
    if (index > 0) fragment.append(document.createElement("wbr"));
    fragment.append(part);
  });
  return fragment;
}
