// My account: second factors, name and email, and password.
import { useId, useState, type ReactNode } from "react";
import { Alert, Button, Paper, PasswordInput, Stack, Text, TextInput, Title } from "@mantine/core";
import { useNavigate } from "react-router";
import { api, call, logIn, SecondFactorRequired, session } from "../api/client";
import { ApiError } from "../api/errors";
import { ErrorAlert } from "../components/ErrorAlert";
import { TwoFactorSettings } from "../components/TwoFactorSettings";
import { useSession, useUser } from "../session";
import { useAction, type Action } from "../useAction";

export function AccountPage() {
  const user = useUser();
  return (
    <Stack maw={560}>
      <Title order={1}>My account</Title>
      <Text c="dimmed">
        Role: {user.is_superuser ? "superuser" : user.role}
      </Text>
      <TwoFactorSettings />
      <ProfileForm />
      <PasswordForm />
    </Stack>
  );
}

function ProfileForm() {
  const user = useUser();
  const { refresh } = useSession();
  const [fullName, setFullName] = useState(user.full_name ?? "");
  const [email, setEmail] = useState(user.email);
  const [password, setPassword] = useState("");
  const [saved, setSaved] = useState(false);
  // A new email needs the current password: a session left open cannot move the account.
  const emailChanged = email.trim() !== user.email;
  const { busy, error, onSubmit } = useAction(async () => {
    setSaved(false);
    const body = emailChanged
      ? { full_name: fullName.trim() || null, email: email.trim(), current_password: password }
      : { full_name: fullName.trim() || null };
    await call(api.PATCH("/api/v1/users/me", { body }));
    setPassword("");
    await refresh();
    setSaved(true);
  });

  return (
    <AccountSection title="Profile" done={saved ? "Profile saved." : null} action={{ busy, error, onSubmit }} errorTitle="Could not save" submit="Save profile">
      <TextInput label="Full name" autoComplete="name" value={fullName} onChange={(e) => setFullName(e.currentTarget.value)} />
      <TextInput label="Email" type="email" autoComplete="email" required value={email} onChange={(e) => setEmail(e.currentTarget.value)} />
      {emailChanged && (
        <PasswordInput
          label="Current password"
          description="Needed to change the email; your old address is told of the change"
          autoComplete="current-password"
          required
          value={password}
          onChange={(e) => setPassword(e.currentTarget.value)}
        />
      )}
    </AccountSection>
  );
}

function PasswordForm() {
  const user = useUser();
  const navigate = useNavigate();
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [repeat, setRepeat] = useState("");
  const [saved, setSaved] = useState(false);
  const { busy, error, onSubmit } = useAction(async () => {
    setSaved(false);
    if (next !== repeat) throw new ApiError(422, "The new passwords do not match.");
    await call(api.PATCH("/api/v1/users/me/password", { body: { current_password: current, new_password: next } }));
    // A new password ends every session, this one included: sign in again with it (an account
    // with a second factor finishes on the login page, where it is asked for).
    try {
      await logIn(user.email, next);
    } catch (caught) {
      if (!(caught instanceof SecondFactorRequired)) throw caught;
      session.signOut();
      navigate("/login", { replace: true, state: { from: "/account" } });
      return;
    }
    setCurrent("");
    setNext("");
    setRepeat("");
    setSaved(true);
  });

  return (
    <AccountSection
      title="Password"
      done={saved ? "Password changed." : null}
      action={{ busy, error, onSubmit }}
      errorTitle="Could not change the password"
      submit="Change password"
    >
      <PasswordInput label="Current password" autoComplete="current-password" required value={current} onChange={(e) => setCurrent(e.currentTarget.value)} />
      <PasswordInput label="New password" description="8 to 128 characters" autoComplete="new-password" required value={next} onChange={(e) => setNext(e.currentTarget.value)} />
      <PasswordInput label="Repeat the new password" autoComplete="new-password" required value={repeat} onChange={(e) => setRepeat(e.currentTarget.value)} />
    </AccountSection>
  );
}

/** One titled form of the account page: its fields, what it says when done or refused, its button. */
function AccountSection({
  title,
  done,
  action,
  errorTitle,
  submit,
  children,
}: {
  title: string;
  done: string | null;
  action: Pick<Action, "busy" | "error" | "onSubmit">;
  errorTitle: string;
  submit: string;
  children: ReactNode;
}) {
  const headingId = useId();
  return (
    <Paper withBorder p="md" component="section" aria-labelledby={headingId}>
      <form onSubmit={action.onSubmit} noValidate>
        <Stack>
          <Title order={2} size="h4" id={headingId}>
            {title}
          </Title>
          {done && (
            <Alert color="teal" role="status">
              {done}
            </Alert>
          )}
          <ErrorAlert error={action.error} title={errorTitle} />
          {children}
          <Button type="submit" loading={action.busy} w="fit-content">
            {submit}
          </Button>
        </Stack>
      </form>
    </Paper>
  );
}
