/**
 * Where the API key lives: the tab's session storage. It is gone when the tab closes, is
 * never in a URL (so never in history, logs or a Referer), and "disconnect" removes it.
 */

const STORAGE_KEY = "herald.apiKey";

export class ApiKeyStore {
  private readonly storage: Storage;

  constructor(storage: Storage) {
    this.storage = storage;
  }

  get(): string | null {
    return this.storage.getItem(STORAGE_KEY);
  }

  set(apiKey: string): void {
    this.storage.setItem(STORAGE_KEY, apiKey);
  }

  clear(): void {
    this.storage.removeItem(STORAGE_KEY);
  }
}
