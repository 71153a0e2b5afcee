import { useState } from "react";
import { Anchor, Button, Divider, PasswordInput, Stack, Text, TextInput } from "@mantine/core";
import { Link, Navigate, useLocation, useNavigate } from "react-router";
import { api, call, finishSignIn, logIn, SecondFactorRequired } from "../api/client";
import { signWithPasskey } from "../api/passkeys";
import { AuthCard } from "../components/AuthCard";
import { ErrorAlert } from "../components/ErrorAlert";
import { useSession, type ReturnTo } from "../session";
import { useAction } from "../useAction";

/** Where a new session goes: an account whose role requires a second factor it lacks is led to
 * enrolment (its session reaches nothing else). */
async function destination(returnTo: string): Promise<string> {
  const mfa = await call(api.GET("/api/v1/users/me/mfa"));
  return mfa.required && !mfa.totp && mfa.passkeys.length === 0 ? "/account" : returnTo;
}

export function LoginPage() {
  const { user, refresh } = useSession();
  const navigate = useNavigate();
  const location = useLocation();
  const returnTo = (location.state as ReturnTo | null)?.from ?? "/patients";
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [step, setStep] = useState<SecondFactorRequired | null>(null);
  const [code, setCode] = useState("");
  const [next, setNext] = useState<string | null>(null);

  async function signedIn() {
    const where = await destination(returnTo);
    setNext(where);
    await refresh();
    navigate(where, { replace: true });
  }

  const passwordStep = useAction(async () => {
    try {
      await logIn(email, password);
    } catch (caught) {
      if (caught instanceof SecondFactorRequired) {
        setStep(caught);
        return;
      }
      throw caught;
    }
    await signedIn();
  });
  const codeStep = useAction(async () => {
    if (!step) return;
    await finishSignIn(step.mfaToken, { code: code.trim() });
    await signedIn();
  });
  const passkeyStep = useAction(async () => {
    if (!step) return;
    await finishSignIn(step.mfaToken, { passkey: await signWithPasskey(step.mfaToken) });
    await signedIn();
  });

  if (user) return <Navigate to={next ?? returnTo} replace />;

  if (step) {
    const hasCodes = step.methods.includes("totp") || step.methods.includes("recovery_code");
    return (
      <AuthCard title="Second factor">
        <Stack>
          <ErrorAlert error={codeStep.error ?? passkeyStep.error} title="Could not log in" />
          {step.methods.includes("passkey") && (
            <Button onClick={() => void passkeyStep.run()} loading={passkeyStep.busy}>
              Use a passkey
            </Button>
          )}
          {step.methods.includes("passkey") && hasCodes && <Divider label="or" />}
          {hasCodes && (
            <form onSubmit={codeStep.onSubmit} noValidate>
              <Stack>
                <TextInput
                  label="Authentication code"
                  description="The 6 digits your authenticator app shows, or one of your recovery codes"
                  autoComplete="one-time-code"
                  inputMode="text"
                  required
                  value={code}
                  onChange={(e) => setCode(e.currentTarget.value)}
                  autoFocus
                />
                <Button type="submit" loading={codeStep.busy}>
                  Verify
                </Button>
              </Stack>
            </form>
          )}
          <Anchor component="button" type="button" size="sm" onClick={() => setStep(null)}>
            Start over
          </Anchor>
        </Stack>
      </AuthCard>
    );
  }

  return (
    <AuthCard title="Log in">
      <form onSubmit={passwordStep.onSubmit} noValidate>
        <Stack>
          {(location.state as ReturnTo | null)?.from && !passwordStep.error && (
            <Text size="sm" c="dimmed">
              Log in to continue where you were.
            </Text>
          )}
          <ErrorAlert error={passwordStep.error} title="Could not log in" />
          <TextInput label="Email" type="email" autoComplete="username" required value={email} onChange={(e) => setEmail(e.currentTarget.value)} autoFocus />
          <PasswordInput label="Password" autoComplete="current-password" required value={password} onChange={(e) => setPassword(e.currentTarget.value)} />
          <Button type="submit" loading={passwordStep.busy}>
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
