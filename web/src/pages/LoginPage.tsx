import { useState } from "react";
import { Anchor, Button, PasswordInput, Stack, Text, TextInput } from "@mantine/core";
import { Link, Navigate, useLocation, useNavigate } from "react-router";
import { logIn } from "../api/client";
import { AuthCard } from "../components/AuthCard";
import { ErrorAlert } from "../components/ErrorAlert";
import { useSession, type ReturnTo } from "../session";
import { useAction } from "../useAction";

export function LoginPage() {
  const { user, refresh } = useSession();
  const navigate = useNavigate();
  const location = useLocation();
  const returnTo = (location.state as ReturnTo | null)?.from ?? "/patients";
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const { busy, error, onSubmit } = useAction(async () => {
    await logIn(email, password);
    await refresh();
    navigate(returnTo, { replace: true });
  });

  if (user) return <Navigate to={returnTo} replace />;

  return (
    <AuthCard title="Log in">
      <form onSubmit={onSubmit} noValidate>
        <Stack>
          {(location.state as ReturnTo | null)?.from && !error && (
            <Text size="sm" c="dimmed">
              Log in to continue where you were.
            </Text>
          )}
          <ErrorAlert error={error} title="Could not log in" />
          <TextInput label="Email" type="email" autoComplete="username" required value={email} onChange={(e) => setEmail(e.currentTarget.value)} autoFocus />
          <PasswordInput label="Password" autoComplete="current-password" required value={password} onChange={(e) => setPassword(e.currentTarget.value)} />
          <Button type="submit" loading={busy}>
            Log in
          </Button>
          <Anchor component={Link} to="/forgot-password" size="sm">
            Forgot your password?
          </Anchor>
        </Stack>
      </form>
    </AuthCard>
  );
}
