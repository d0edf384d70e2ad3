/** The first screen: an API key, checked against the API before it is kept. */

import { h, setMessage } from "./dom";
import type { View } from "./view";

export interface ConnectOptions {
  apiBaseUrl: string;
  /** Why the person is here again (a refused key, a disconnect), if they were connected. */
  reason: string | null;
  /** Tries the key; resolves to what went wrong, or null once connected. */
  connect(apiKey: string): Promise<string | null>;
}

export function connectView(options: ConnectOptions): View {
  const heading = h("h1", { tabindex: -1 }, "Connect to Herald");
  const reason = h("p", { class: "notice notice-warning", role: "alert" });
  setMessage(reason, options.reason);
  const input = h("input", {
    id: "api-key",
    name: "api-key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "api-key-hint api-key-error",
  });
  const error = h("p", { id: "api-key-error", class: "field-error", hidden: true });
  const submit = h("button", { type: "submit", class: "button button-primary" }, "Connect");
  const form = h(
    "form",
    { novalidate: true },
    h(
      "div",
      { class: "field" },
      h("label", { for: "api-key" }, "API key"),
      h(
        "p",
        { id: "api-key-hint", class: "hint" },
        "Kept in this browser tab only, until you disconnect or close the tab.",
      ),
      input,
      error,
    ),
    submit,
  );

  function showError(message: string | null): void {
    setMessage(error, message);
    input.setAttribute("aria-invalid", String(message !== null));
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const apiKey = input.value.trim();
    if (apiKey === "") {
      showError("Enter your API key.");
      input.focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = "Connecting…";
    void options.connect(apiKey).then((failure) => {
      // On success the app has already replaced this screen.
      if (failure === null) return;
      submit.disabled = false;
      submit.textContent = "Connect";
      showError(failure);
      input.focus();
    });
  });

  const element = h(
    "div",
    { class: "view" },
    heading,
    h("p", {}, "Herald's API at ", h("code", {}, options.apiBaseUrl), " needs an API key."),
    reason,
    form,
  );
  return { title: "Connect", element, heading, dispose: () => undefined };
}
