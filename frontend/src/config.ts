/**
 * The runtime configuration, read from /config.json at start-up so that one build serves
 * every environment: the deployment writes the file, the bundle never changes.
 */

export interface Config {
  /** The API's origin (and path prefix, if any), without a trailing slash. */
  apiBaseUrl: string;
}

export const CONFIG_PATH = "/config.json";

/** Why the app cannot start: shown as is on the configuration error screen. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

export async function loadConfig(fetchImpl: typeof fetch = fetch): Promise<Config> {
  let response: Response;
  try {
    // Always revalidate: a cached file would point a new deployment at an old API.
    response = await fetchImpl.call(globalThis, CONFIG_PATH, { cache: "no-store" });
  } catch {
    throw new ConfigError(`${CONFIG_PATH} could not be downloaded (network error).`);
  }
  if (!response.ok) {
    throw new ConfigError(`${CONFIG_PATH} is missing: the server answered ${response.status}.`);
  }
  let body: unknown;
  try {
    body = await response.json();
  } catch {
    throw new ConfigError(`${CONFIG_PATH} is not valid JSON.`);
  }
  return { apiBaseUrl: parseApiBaseUrl(body) };
}

function parseApiBaseUrl(body: unknown): string {
  const value =
    typeof body === "object" && body !== null && "apiBaseUrl" in body ? body.apiBaseUrl : undefined;
  if (typeof value !== "string" || value === "") {
    throw new ConfigError(`${CONFIG_PATH} has no "apiBaseUrl" string.`);
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(`"apiBaseUrl" is not an absolute URL: ${value}`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new ConfigError(`"apiBaseUrl" must be an http(s) URL: ${value}`);
  }
  if (url.search || url.hash) {
    throw new ConfigError(`"apiBaseUrl" may not have a query or a fragment: ${value}`);
  }
  // Routes are appended as "/v1/…": a trailing slash would double it.
  return (url.origin + url.pathname).replace(/\/+$/, "");
}
