// Bulk export (superusers): every record, every patient's, or one group's, as FHIR NDJSON files
// (FHIR Bulk Data). The export runs on the server; this page polls its status URL (kept in the
// tab, so a reload picks it up again), shows its progress, then a link to each file. Links are
// short-lived: the page asks for fresh ones on every poll.
import { useCallback, useEffect, useState } from "react";
import { Alert, Anchor, Button, Checkbox, Group, Progress, Select, Stack, Table, Text, TextInput, Title } from "@mantine/core";
import { fhir, type Bundle, type GroupResource } from "../api/fhir";
import { ErrorAlert } from "../components/ErrorAlert";
import { useAction } from "../useAction";

const STATUS_KEY = "carevault.export_status";
const ALL_TYPES = ["Patient", "DocumentReference", "AuditEvent"] as const;

interface ManifestFile {
  type: string;
  url: string;
  count: number;
}

interface Manifest {
  transactionTime: string;
  output: ManifestFile[];
  error: ManifestFile[];
}

type Status =
  | { state: "running"; progress: string }
  | { state: "done"; manifest: Manifest; expires: string | null }
  | { state: "failed"; text: string };

/** "42% (21 of 50 chunks written)" → 42. */
const percent = (progress: string) => Number(/^(\d+)%/.exec(progress)?.[1] ?? 0);

export function ExportsPage() {
  const [level, setLevel] = useState<string>("system");
  const [groups, setGroups] = useState<GroupResource[]>([]);
  const [groupId, setGroupId] = useState<string | null>(null);
  const [types, setTypes] = useState<string[]>([...ALL_TYPES]);
  const [since, setSince] = useState("");
  const [statusUrl, setStatusUrl] = useState<string | null>(sessionStorage.getItem(STATUS_KEY));
  const [status, setStatus] = useState<Status | null>(null);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    fhir<Bundle<GroupResource>>("Group?_count=200")
      .then((bundle) => setGroups((bundle.data.entry ?? []).map((entry) => entry.resource)))
      .catch(setError);
  }, []);

  const forget = () => {
    sessionStorage.removeItem(STATUS_KEY);
    setStatusUrl(null);
    setStatus(null);
  };

  const poll = useCallback(async (url: string) => {
    try {
      const answer = await fhir<Manifest>(url);
      if (answer.status === 202) {
        setStatus({ state: "running", progress: answer.headers.get("X-Progress") ?? "in progress" });
        return false;
      }
      setStatus({ state: "done", manifest: answer.data, expires: answer.headers.get("Expires") });
      return true;
    } catch (caught) {
      const status = (caught as { status?: number }).status;
      if (status === 404) {
        forget();
        setError(new Error("That export is no longer available (it expired or was cancelled)."));
      } else if (status === 500) {
        setStatus({ state: "failed", text: (caught as Error).message });
      } else {
        setError(caught);
      }
      return true;
    }
  }, []);

  // While an export runs: its status every two seconds, until it is done, failed or gone.
  useEffect(() => {
    if (!statusUrl) return;
    let stopped = false;
    let timer: ReturnType<typeof setTimeout>;
    const tick = async () => {
      const finished = await poll(statusUrl);
      if (!finished && !stopped) timer = setTimeout(tick, 2000);
    };
    void tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [statusUrl, poll]);

  const start = useAction(async () => {
    const path = level === "group" ? `Group/${groupId}/$export` : level === "patient" ? "Patient/$export" : "$export";
    const query = new URLSearchParams();
    const chosen = types.filter((type) => level === "system" || type !== "AuditEvent");
    if (chosen.length === 0) throw new Error("Choose at least one kind of record");
    query.set("_type", chosen.join(","));
    if (since) query.set("_since", new Date(since).toISOString());
    const answer = await fhir(`${path}?${query}`, { headers: { Prefer: "respond-async" } });
    const url = answer.headers.get("Content-Location");
    if (!url) throw new Error("The API did not say where to follow the export");
    sessionStorage.setItem(STATUS_KEY, url);
    setStatus({ state: "running", progress: "planning" });
    setStatusUrl(url);
  });

  const cancel = useAction(async () => {
    if (!statusUrl) return;
    await fhir(statusUrl, { method: "DELETE" });
    forget();
  });

  return (
    <Stack>
      <Title order={1}>Bulk export</Title>
      <Text>
        Every record, or one group's, as FHIR NDJSON files (one resource a line), as of the moment the export starts. The same export is
        open to back-end systems through FHIR Bulk Data (<code>$export</code>).
      </Text>
      <ErrorAlert error={error ?? start.error ?? cancel.error} />
      {!statusUrl && (
        <form onSubmit={start.onSubmit}>
          <Stack maw={560}>
            <Select
              label="Records"
              value={level}
              onChange={(value) => setLevel(value ?? "system")}
              allowDeselect={false}
              data={[
                { value: "system", label: "Everything (patients, documents, the audit trail)" },
                { value: "patient", label: "Every patient's record (patients and documents)" },
                { value: "group", label: "One group's patients and their documents" },
              ]}
            />
            {level === "group" && (
              <Select
                label="Group"
                placeholder={groups.length ? "Choose a group" : "No groups yet: create one on the Groups page"}
                value={groupId}
                onChange={setGroupId}
                data={groups.map((group) => ({ value: group.id ?? "", label: `${group.name} (${group.quantity ?? 0})` }))}
                required
              />
            )}
            <Checkbox.Group label="Kinds of record" value={types} onChange={setTypes}>
              <Group mt="xs">
                <Checkbox value="Patient" label="Patients" />
                <Checkbox value="DocumentReference" label="Documents" />
                {level === "system" && <Checkbox value="AuditEvent" label="Audit trail" />}
              </Group>
            </Checkbox.Group>
            <TextInput
              type="datetime-local"
              label="Changed since (optional)"
              description="Only records created or changed at or after this time"
              value={since}
              onChange={(event) => setSince(event.currentTarget.value)}
            />
            <Group>
              <Button type="submit" loading={start.busy} disabled={level === "group" && !groupId}>
                Start export
              </Button>
            </Group>
          </Stack>
        </form>
      )}
      {statusUrl && status?.state === "running" && (
        <Stack maw={560}>
          <Text role="status">Exporting: {status.progress}</Text>
          <Progress value={percent(status.progress)} aria-label="Export progress" animated />
          <Group>
            <Button variant="default" color="red" loading={cancel.busy} onClick={() => void cancel.run()}>
              Cancel export
            </Button>
          </Group>
        </Stack>
      )}
      {statusUrl && status?.state === "failed" && (
        <Alert color="red" title="The export failed">
          <Stack gap="xs">
            <Text>{status.text}</Text>
            <Button variant="default" onClick={forget}>
              Start another
            </Button>
          </Stack>
        </Alert>
      )}
      {statusUrl && status?.state === "done" && (
        <Stack>
          <Text role="status">
            Export complete: the records as of {new Date(status.manifest.transactionTime).toLocaleString()}.
            {status.expires && ` Files available until ${new Date(status.expires).toLocaleString()}.`}
          </Text>
          <Table striped>
            <Table.Thead>
              <Table.Tr>
                <Table.Th>Kind</Table.Th>
                <Table.Th>Records</Table.Th>
                <Table.Th>File</Table.Th>
              </Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {[...status.manifest.output, ...status.manifest.error].map((file) => {
                const name = decodeURIComponent(new URL(file.url).pathname.split("/").pop() ?? "export.ndjson");
                return (
                  <Table.Tr key={file.url}>
                    <Table.Td>{file.type === "OperationOutcome" ? "Problems" : file.type}</Table.Td>
                    <Table.Td>{file.count}</Table.Td>
                    <Table.Td>
                      <Anchor href={file.url} download={name}>
                        {name}
                      </Anchor>
                    </Table.Td>
                  </Table.Tr>
                );
              })}
            </Table.Tbody>
          </Table>
          <Group>
            <Button variant="default" onClick={() => void poll(statusUrl)}>
              Fresh links
            </Button>
            <Button variant="default" color="red" loading={cancel.busy} onClick={() => void cancel.run()}>
              Delete the files
            </Button>
            <Button variant="subtle" onClick={forget}>
              Start another
            </Button>
          </Group>
        </Stack>
      )}
    </Stack>
  );
}
