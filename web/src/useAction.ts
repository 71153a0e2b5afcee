// The one way a page runs a request on the user's behalf: busy while it runs, and the error (the
// API's detail) kept for the page to show.
import { useState, type FormEvent } from "react";

export interface Action {
  busy: boolean;
  error: unknown;
  setError: (error: unknown) => void;
  run: () => Promise<void>;
  /** For a form's onSubmit: no page reload, then run. */
  onSubmit: (event: FormEvent) => void;
}

export function useAction(action: () => Promise<void>): Action {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  async function run() {
    setBusy(true);
    setError(null);
    try {
      await action();
    } catch (caught) {
      setError(caught);
    } finally {
      setBusy(false);
    }
  }
  function onSubmit(event: FormEvent) {
    event.preventDefault();
    void run();
  }
  return { busy, error, setError, run, onSubmit };
}
