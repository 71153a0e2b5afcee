// Connected apps (superusers): the SMART on FHIR clients that may ask for access, registered
// here with their RFC 7591 metadata; a confidential client's secret is shown once, right after
// registration; revoking deletes the client and ends every token it holds at once.
import { useCallback, useEffect, useState } from "react";
import { Alert, Button, Code, Group, Modal, Select, Stack, Table, Text, Textarea, TextInput, Title } from "@mantine/core";
import { api, call, type Schemas } from "../api/client";
import { ErrorAlert } from "../components/ErrorAlert";
import { useAction } from "../useAction";

type Client = Schemas["SmartClient"];
type Method = "none" | "client_secret_basic" | "private_key_jwt";

const methods: { value: Method; label: string }[] = [
  { value: "none", label: "Public app (browser or device, PKCE only)" },
  { value: "client_secret_basic", label: "Confidential app with a secret" },
  { value: "private_key_jwt", label: "Back-end system or app with its own keys (private_key_jwt)" },
];

const lines = (text: string) =>
  text
    .split(/\s*\n\s*/)
    .map((line) => line.trim())
    .filter(Boolean);

export function ConnectedAppsPage() {
  const [clients, setClients] = useState<Client[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [registering, setRegistering] = useState(false);
  const [secret, setSecret] = useState<{ name: string; id: string; secret: string } | null>(null);
  const [revoking, setRevoking] = useState<Client | null>(null);

  const load = useCallback(async () => {
    try {
      setClients((await call(api.GET("/api/v1/smart-clients/"))).data);
      setError(null);
    } catch (caught) {
      setError(caught);
    }
  }, []);
  useEffect(() => {
    void load();
  }, [load]);

  const [name, setName] = useState("");
  const [method, setMethod] = useState<Method>("none");
  const [redirects, setRedirects] = useState("");
  const [scope, setScope] = useState("launch/patient patient/*.rs openid fhirUser");
  const [launchUrl, setLaunchUrl] = useState("");
  const [jwksUri, setJwksUri] = useState("");
  const [jwks, setJwks] = useState("");
  const reset = () => {
    setName("");
    setMethod("none");
    setRedirects("");
    setScope("launch/patient patient/*.rs openid fhirUser");
    setLaunchUrl("");
    setJwksUri("");
    setJwks("");
  };
  const register = useAction(async () => {
    const backend = method === "private_key_jwt" && lines(redirects).length === 0;
    let keys: Record<string, unknown> | undefined;
    if (jwks.trim()) {
      try {
        keys = JSON.parse(jwks) as Record<string, unknown>;
      } catch {
        throw new Error("The JWK Set is not JSON");
      }
    }
    const created = await call(
      api.POST("/api/v1/smart-clients/", {
        body: {
          client_name: name,
          token_endpoint_auth_method: method,
          redirect_uris: lines(redirects),
          grant_types: backend ? ["client_credentials"] : ["authorization_code", "refresh_token"],
          scope,
          ...(launchUrl.trim() ? { launch_url: launchUrl.trim() } : {}),
          ...(jwksUri.trim() ? { jwks_uri: jwksUri.trim() } : {}),
          ...(keys ? { jwks: keys } : {}),
        },
      }),
    );
    setRegistering(false);
    reset();
    if (created.client_secret) setSecret({ name: created.client_name, id: created.client_id, secret: created.client_secret });
    await load();
  });
  const revoke = useAction(async () => {
    if (!revoking) return;
    await call(api.DELETE("/api/v1/smart-clients/{client_id}", { params: { path: { client_id: revoking.client_id } } }));
    setRevoking(null);
    await load();
  });

  return (
    <Stack>
      <Group justify="space-between">
        <Title order={1}>Connected apps</Title>
        <Button onClick={() => setRegistering(true)}>Register an app</Button>
      </Group>
      <Text>
        SMART on FHIR apps and back-end systems that may ask for access to the FHIR API. Users approve what an app asks for;
        it never gets more than its registered scope or the user's role allows.
      </Text>
      <ErrorAlert error={error} />
      {secret && (
        <Alert title={`The secret of ${secret.name}`} withCloseButton onClose={() => setSecret(null)} closeButtonLabel="Hide the secret">
          <Stack gap="xs">
            <Text>Copy it now: it is shown this once and only its hash is kept.</Text>
            <Text>
              Client id: <Code>{secret.id}</Code>
            </Text>
            <Text>
              Client secret: <Code data-testid="client-secret">{secret.secret}</Code>
            </Text>
          </Stack>
        </Alert>
      )}
      <Table striped>
        <Table.Thead>
          <Table.Tr>
            <Table.Th>App</Table.Th>
            <Table.Th>Client id</Table.Th>
            <Table.Th>Authentication</Table.Th>
            <Table.Th>Scope</Table.Th>
            <Table.Th>
              <span className="visually-hidden">Actions</span>
            </Table.Th>
          </Table.Tr>
        </Table.Thead>
        <Table.Tbody>
          {clients.map((client) => (
            <Table.Tr key={client.client_id}>
              <Table.Td>{client.client_name}</Table.Td>
              <Table.Td>
                <Code>{client.client_id}</Code>
              </Table.Td>
              <Table.Td>{client.token_endpoint_auth_method}</Table.Td>
              <Table.Td>{client.scope}</Table.Td>
              <Table.Td>
                <Button size="xs" color="red" variant="outline" onClick={() => setRevoking(client)} aria-label={`Revoke ${client.client_name}`}>
                  Revoke
                </Button>
              </Table.Td>
            </Table.Tr>
          ))}
          {clients.length === 0 && (
            <Table.Tr>
              <Table.Td colSpan={5}>No app is registered.</Table.Td>
            </Table.Tr>
          )}
        </Table.Tbody>
      </Table>

      <Modal opened={registering} onClose={() => setRegistering(false)} title="Register an app">
        <form onSubmit={register.onSubmit}>
          <Stack>
            <TextInput label="Name" required value={name} onChange={(e) => setName(e.currentTarget.value)} />
            <Select label="How it signs in" data={methods} value={method} onChange={(value) => setMethod((value as Method) ?? "none")} allowDeselect={false} />
            <Textarea
              label="Redirect URIs"
              description="One per line: https, or http on a loopback address. None for a back-end system."
              value={redirects}
              onChange={(e) => setRedirects(e.currentTarget.value)}
              autosize
              minRows={2}
            />
            <TextInput label="Scope" description="The most it may ever be granted, e.g. patient/*.rs or system/*.rs" required value={scope} onChange={(e) => setScope(e.currentTarget.value)} />
            <TextInput label="Launch URL (optional)" description="Opened from a patient's page (EHR launch)" value={launchUrl} onChange={(e) => setLaunchUrl(e.currentTarget.value)} />
            {method === "private_key_jwt" && (
              <>
                <TextInput label="JWK Set URL" description="Where its public keys are (jwks_uri), or give them below" value={jwksUri} onChange={(e) => setJwksUri(e.currentTarget.value)} />
                <Textarea
                  label="JWK Set"
                  description='Its public keys as JSON: {"keys": [...]}, each with a kid'
                  value={jwks}
                  onChange={(e) => setJwks(e.currentTarget.value)}
                  autosize
                  minRows={3}
                />
              </>
            )}
            <ErrorAlert error={register.error} />
            <Group justify="flex-end">
              <Button variant="default" onClick={() => setRegistering(false)}>
                Cancel
              </Button>
              <Button type="submit" loading={register.busy}>
                Register
              </Button>
            </Group>
          </Stack>
        </form>
      </Modal>

      <Modal opened={revoking !== null} onClose={() => setRevoking(null)} title="Revoke this app?">
        <Stack>
          <Text>
            {revoking?.client_name} loses every token it holds at once and can no longer ask for access. This cannot be undone.
          </Text>
          <ErrorAlert error={revoke.error} />
          <Group justify="flex-end">
            <Button variant="default" onClick={() => setRevoking(null)}>
              Cancel
            </Button>
            <Button color="red" onClick={() => void revoke.run()} loading={revoke.busy}>
              Revoke
            </Button>
          </Group>
        </Stack>
      </Modal>
    </Stack>
  );
}
