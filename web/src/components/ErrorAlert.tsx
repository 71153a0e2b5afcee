import { Alert } from "@mantine/core";
import { messageOf } from "../api/errors";

/** An API error's `detail`, announced to screen readers as it appears. */
export function ErrorAlert({ error, title = "Error" }: { error: unknown; title?: string }) {
  if (error === null || error === undefined) return null;
  return (
    <Alert color="red" title={title} role="alert" variant="light">
      {messageOf(error)}
    </Alert>
  );
}
