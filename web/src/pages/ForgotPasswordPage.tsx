import { useState } from "react";
import { Alert, Anchor, Button, Stack, TextInput } from "@mantine/core";
import { Link } from "react-router";
import { api, call } from "../api/client";
import { AuthCard } from "../components/AuthCard";
import { ErrorAlert } from "../components/ErrorAlert";
import { useAction } from "../useAction";

export function ForgotPasswordPage() {
  const [email, setEmail] = useState("");
  const [sent, setSent] = useState(false);
  const { busy, error, onSubmit } = useAction(async () => {
    await call(api.POST("/api/v1/password-recovery/{email}", { params: { path: { email } } }));
    setSent(true);
  });

  return (
    <AuthCard title="Reset your password">
      <form onSubmit={onSubmit} noValidate>
        <Stack>
          {sent ? (
            <Alert color="teal" role="status" title="Check your email">
              If an account exists for {email}, we have sent it a link to set a new password.
            </Alert>
          ) : (
            <>
              <ErrorAlert error={error} />
              <TextInput label="Email" type="email" autoComplete="email" required value={email} onChange={(e) => setEmail(e.currentTarget.value)} autoFocus />
              <Button type="submit" loading={busy}>
                Send reset link
              </Button>
            </>
          )}
          <Anchor component={Link} to="/login" size="sm">
            Back to log in
          </Anchor>
        </Stack>
      </form>
    </AuthCard>
  );
}
