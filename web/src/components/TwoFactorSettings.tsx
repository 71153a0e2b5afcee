// My account's two-factor settings: an authenticator app (QR code drawn here, never by another
// service; the secret as text), recovery codes shown once with copy and download, passkeys
// added by name and removed. A change of factor ends the user's other sessions; the API hands
// this one a fresh token.
import { useCallback, useEffect, useId, useMemo, useState } from "react";
import { Alert, Badge, Button, Code, CopyButton, Group, List, Paper, PasswordInput, Stack, Table, Text, TextInput, Title } from "@mantine/core";
import { encode } from "uqr";
import { api, call, session } from "../api/client";
import { ApiError } from "../api/errors";
import { createPasskey } from "../api/passkeys";
import { ErrorAlert } from "./ErrorAlert";
import { formatDateTime } from "../format";
import { useSession } from "../session";
import { useAction } from "../useAction";

interface MfaStatus {
  totp: boolean;
  passkeys: { id: string; name: string; created_at: string; last_used_at?: string | null }[];
  recovery_codes_left: number;
  required: boolean;
}

/** The otpauth URI as a QR code, drawn as SVG squares from uqr's module matrix. */
function QrCode({ text }: { text: string }) {
  const qr = useMemo(() => encode(text, { ecc: "M", border: 2 }), [text]);
  const cells: string[] = [];
  qr.data.forEach((row, y) =>
    row.forEach((dark, x) => {
      if (dark) cells.push(`M${x} ${y}h1v1h-1z`);
    }),
  );
  return (
    <svg role="img" aria-label="QR code of the authenticator setup link" width={200} height={200} viewBox={`0 0 ${qr.size} ${qr.size}`} shapeRendering="crispEdges" style={{ background: "#fff" }}>
      <path d={cells.join("")} fill="#000" />
    </svg>
  );
}

function RecoveryCodes({ codes }: { codes: string[] }) {
  const text = codes.join("\n") + "\n";
  const href = useMemo(() => URL.createObjectURL(new Blob([text], { type: "text/plain" })), [text]);
  useEffect(() => () => URL.revokeObjectURL(href), [href]);
  return (
    <Alert color="yellow" title="Your recovery codes" role="status" styles={{ title: { color: "var(--mantine-color-text)" } }}>
      <Stack gap="xs">
        <Text size="sm">Each works once, in place of a code or passkey. They are shown only now: keep them somewhere safe.</Text>
        <List aria-label="Recovery codes" ff="monospace" size="sm">
          {codes.map((code) => (
            <List.Item key={code}>{code}</List.Item>
          ))}
        </List>
        <Group>
          <CopyButton value={text}>{({ copied, copy }) => <Button size="xs" variant="default" onClick={copy}>{copied ? "Copied" : "Copy"}</Button>}</CopyButton>
          <Button size="xs" variant="default" component="a" href={href} download="carevault-recovery-codes.txt">
            Download
          </Button>
        </Group>
      </Stack>
    </Alert>
  );
}

export function TwoFactorSettings() {
  const headingId = useId();
  const { refresh } = useSession();
  const [status, setStatus] = useState<MfaStatus | null>(null);
  const [codes, setCodes] = useState<string[] | null>(null);
  const load = useCallback(async () => setStatus((await call(api.GET("/api/v1/users/me/mfa"))) as MfaStatus), []);
  const loading = useAction(load);
  useEffect(() => {
    void loading.run();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  /** After a factor change: this tab's fresh token, the codes to show, the status again. */
  async function changed(answer: { access_token?: string; recovery_codes?: string[] }) {
    if (answer.access_token) session.signIn(answer.access_token);
    if (answer.recovery_codes) setCodes(answer.recovery_codes);
    await load();
    await refresh();
  }

  return (
    <Paper withBorder p="md" component="section" aria-labelledby={headingId}>
      <Stack>
        <Title order={2} size="h4" id={headingId}>
          Two-factor sign-in
        </Title>
        <ErrorAlert error={loading.error} title="Could not read your second factors" />
        {status?.required && !status.totp && status.passkeys.length === 0 && (
          <Alert color="orange" title="Set up a second factor to continue" role="alert" styles={{ title: { color: "var(--mantine-color-text)" } }}>
            Your role requires an authenticator app or a passkey. Until you add one, this page is all you can reach.
          </Alert>
        )}
        {codes && <RecoveryCodes codes={codes} />}
        {status && (
          <>
            <AuthenticatorApp status={status} onChanged={changed} />
            <Passkeys status={status} onChanged={changed} />
            {(status.totp || status.passkeys.length > 0) && (
              <NewRecoveryCodes
                left={status.recovery_codes_left}
                onCodes={async (fresh) => {
                  setCodes(fresh);
                  await load();
                }}
              />
            )}
          </>
        )}
      </Stack>
    </Paper>
  );
}

type Changed = (answer: { access_token?: string; recovery_codes?: string[] }) => Promise<void>;

function AuthenticatorApp({ status, onChanged }: { status: MfaStatus; onChanged: Changed }) {
  const [password, setPassword] = useState("");
  const [code, setCode] = useState("");
  const [pending, setPending] = useState<{ secret: string; otpauth_uri: string } | null>(null);
  const begin = useAction(async () => {
    setPending(await call(api.POST("/api/v1/users/me/mfa/totp", { body: { current_password: password } })));
    setPassword("");
  });
  const confirm = useAction(async () => {
    const answer = await call(api.POST("/api/v1/users/me/mfa/totp/confirm", { body: { code: code.trim() } }));
    setPending(null);
    setCode("");
    await onChanged(answer);
  });
  const remove = useAction(async () => {
    const answer = await call(api.DELETE("/api/v1/users/me/mfa/totp", { body: { current_password: password, code: code.trim() } }));
    setPassword("");
    setCode("");
    await onChanged(answer);
  });

  if (status.totp) {
    return (
      <form onSubmit={remove.onSubmit} noValidate aria-label="Authenticator app">
        <Stack gap="xs">
          <Group>
            <Text fw={500}>Authenticator app</Text>
            <Badge color="teal">On</Badge>
          </Group>
          <ErrorAlert error={remove.error} title="Could not remove the authenticator" />
          <PasswordInput label="Current password" autoComplete="current-password" value={password} onChange={(e) => setPassword(e.currentTarget.value)} />
          <TextInput label="A code from the app (or a recovery code)" autoComplete="one-time-code" value={code} onChange={(e) => setCode(e.currentTarget.value)} />
          <Button type="submit" color="red" variant="light" loading={remove.busy} w="fit-content">
            Remove authenticator app
          </Button>
        </Stack>
      </form>
    );
  }
  if (pending) {
    return (
      <form onSubmit={confirm.onSubmit} noValidate aria-label="Authenticator app">
        <Stack gap="xs">
          <Text fw={500}>Scan this code with your authenticator app</Text>
          <QrCode text={pending.otpauth_uri} />
          <Text size="sm">
            Or enter this key by hand: <Code data-testid="totp-secret">{pending.secret}</Code>
          </Text>
          <ErrorAlert error={confirm.error} title="Could not turn on the authenticator" />
          <TextInput label="The 6-digit code the app shows" autoComplete="one-time-code" inputMode="numeric" required value={code} onChange={(e) => setCode(e.currentTarget.value)} />
          <Button type="submit" loading={confirm.busy} w="fit-content">
            Turn on
          </Button>
        </Stack>
      </form>
    );
  }
  return (
    <form onSubmit={begin.onSubmit} noValidate aria-label="Authenticator app">
      <Stack gap="xs">
        <Text fw={500}>Authenticator app</Text>
        <ErrorAlert error={begin.error} title="Could not start" />
        <PasswordInput label="Current password" autoComplete="current-password" required value={password} onChange={(e) => setPassword(e.currentTarget.value)} />
        <Button type="submit" loading={begin.busy} w="fit-content">
          Set up an authenticator app
        </Button>
      </Stack>
    </form>
  );
}

function Passkeys({ status, onChanged }: { status: MfaStatus; onChanged: Changed }) {
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const add = useAction(async () => {
    // Checked before the browser makes a key, so a refused name leaves none behind on the device.
    if (name.trim().length === 0) throw new ApiError(422, "Give the passkey a name.");
    const options = await call(api.POST("/api/v1/users/me/mfa/passkeys/options", { body: { current_password: password } }));
    const credential = await createPasskey(options as { publicKey?: unknown });
    const answer = await call(api.POST("/api/v1/users/me/mfa/passkeys", { body: { name: name.trim(), credential } as never }));
    setName("");
    setPassword("");
    await onChanged(answer as { access_token?: string; recovery_codes?: string[] });
  });
  const remove = useAction(async () => undefined);
  async function removePasskey(id: string) {
    remove.setError(null);
    if (password.length === 0) {
      remove.setError(new ApiError(422, "Enter your current password above the Add button to remove a passkey."));
      return;
    }
    try {
      const answer = await call(api.DELETE("/api/v1/users/me/mfa/passkeys/{passkey_id}", { params: { path: { passkey_id: id } }, body: { current_password: password } }));
      setPassword("");
      await onChanged(answer);
    } catch (caught) {
      remove.setError(caught);
    }
  }
  return (
    <Stack gap="xs">
      <Text fw={500}>Passkeys</Text>
      <ErrorAlert error={remove.error} title="Could not remove the passkey" />
      {status.passkeys.length > 0 && (
        <Table aria-label="Passkeys">
          <Table.Thead>
            <Table.Tr>
              <Table.Th scope="col">Name</Table.Th>
              <Table.Th scope="col">Added</Table.Th>
              <Table.Th scope="col">Last used</Table.Th>
              <Table.Th scope="col">
                <span className="visually-hidden">Actions</span>
              </Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {status.passkeys.map((key) => (
              <Table.Tr key={key.id}>
                <Table.Td>{key.name}</Table.Td>
                <Table.Td>{formatDateTime(key.created_at)}</Table.Td>
                <Table.Td>{key.last_used_at ? formatDateTime(key.last_used_at) : "never"}</Table.Td>
                <Table.Td>
                  <Button size="xs" color="red" variant="light" onClick={() => void removePasskey(key.id)} aria-label={`Remove passkey ${key.name}`}>
                    Remove
                  </Button>
                </Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      )}
      <form onSubmit={add.onSubmit} noValidate aria-label="Add a passkey">
        <Stack gap="xs">
          <ErrorAlert error={add.error} title="Could not add the passkey" />
          <TextInput label="Passkey name" description="e.g. the device it lives on" maxLength={100} value={name} onChange={(e) => setName(e.currentTarget.value)} />
          <PasswordInput label="Current password" description="Needed to add or remove a passkey" autoComplete="current-password" value={password} onChange={(e) => setPassword(e.currentTarget.value)} />
          <Button type="submit" loading={add.busy} w="fit-content">
            Add a passkey
          </Button>
        </Stack>
      </form>
    </Stack>
  );
}

function NewRecoveryCodes({ left, onCodes }: { left: number; onCodes: (codes: string[]) => Promise<void> }) {
  const [password, setPassword] = useState("");
  const [code, setCode] = useState("");
  const renew = useAction(async () => {
    const answer = await call(api.POST("/api/v1/users/me/mfa/recovery-codes", { body: { current_password: password, code: code.trim() } }));
    setPassword("");
    setCode("");
    await onCodes(answer.recovery_codes);
  });
  return (
    <form onSubmit={renew.onSubmit} noValidate aria-label="Recovery codes">
      <Stack gap="xs">
        <Text fw={500}>Recovery codes: {left} left</Text>
        <ErrorAlert error={renew.error} title="Could not make new codes" />
        <PasswordInput label="Current password" autoComplete="current-password" value={password} onChange={(e) => setPassword(e.currentTarget.value)} />
        <TextInput label="A code from your app or a recovery code" autoComplete="one-time-code" value={code} onChange={(e) => setCode(e.currentTarget.value)} />
        <Button type="submit" variant="default" loading={renew.busy} w="fit-content">
          Make new recovery codes
        </Button>
      </Stack>
    </form>
  );
}
