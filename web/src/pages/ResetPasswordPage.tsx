import { useState } from "react";
import { Alert, Anchor, Button, PasswordInput, Stack } from "@mantine/core";
import { Link } from "react-router";
import { api, call } from "../api/client";
import { ApiError } from "../api/errors";
import { AuthCard } from "../components/AuthCard";
import { ErrorAlert } from "../components/ErrorAlert";
import { useAction } from "../useAction";

// The emailed link carries the token in its query string; it is read once and taken out of the
// address bar and history, so it is not left in the browser for the next person.
function takeTokenFromUrl(): string {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token") ?? "";
  if (token) {
    url.searchParams.delete("token");
    window.history.replaceState(window.history.state, "", url.pathname + url.search);
  }
  return token;
}

export function ResetPasswordPage() {
  const [token] = useState(takeTokenFromUrl);
  const [password, setPassword] = useState("");
  const [confirmation, setConfirmation] = useState("");
  const [done, setDone] = useState(false);
  const { busy, error, onSubmit } = useAction(async () => {
    if (password !== confirmation) throw new ApiError(422, "The passwords do not match.");
    await call(api.POST("/api/v1/reset-password/", { body: { token, new_password: password } }));
    setDone(true);
  });

  if (!token) {
    return (
      <AuthCard title="Set a new password">
        <Stack>
          <Alert color="red" role="alert">
            This page needs the link from your password email. Ask for a new one if it has expired.
          </Alert>
          <Anchor component={Link} to="/forgot-password">
            Send a new link
          </Anchor>
        </Stack>
      </AuthCard>
    );
  }

  return (
    <AuthCard title="Set a new password">
      <form onSubmit={onSubmit} noValidate>
        <Stack>
          {done ? (
            <Alert color="teal" role="status" title="Password updated">
              Your password has been changed. You can log in with it now.
            </Alert>
          ) : (
            <>
              <ErrorAlert error={error} />
              <PasswordInput
                label="New password"
                description="8 to 128 characters"
                autoComplete="new-password"
                required
                value={password}
                onChange={(e) => setPassword(e.currentTarget.value)}
                autoFocus
              />
              <PasswordInput label="Repeat the new password" autoComplete="new-password" required value={confirmation} onChange={(e) => setConfirmation(e.currentTarget.value)} />
              <Button type="submit" loading={busy}>
                Set password
              </Button>
            </>
          )}
          <Anchor component={Link} to="/login" size="sm">
            Go to log in
          </Anchor>
        </Stack>
      </form>
    </AuthCard>
  );
}
