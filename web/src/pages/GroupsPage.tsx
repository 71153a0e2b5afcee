// Patient groups: named cohorts (FHIR Group) a superuser exports in bulk. Listed newest first;
// created and edited with a name and members picked with the patient search; deleted (the
// patients stay). Viewers read; clinicians and superusers write.
import { useCallback, useEffect, useState } from "react";
import { Badge, Button, Group, List, Modal, Stack, Table, Text, TextInput, Title } from "@mantine/core";
import { useDebouncedValue } from "@mantine/hooks";
import { api, call, type Patient } from "../api/client";
import { fhir, memberIds, type Bundle, type GroupResource } from "../api/fhir";
import { ErrorAlert } from "../components/ErrorAlert";
import { useUser } from "../session";
import { useAction } from "../useAction";

interface Member {
  id: string;
  name: string;
}

/** Patients whose name starts with the words typed: the JSON API's name search. */
function usePatientSearch(text: string) {
  const [debounced] = useDebouncedValue(text, 250);
  const [found, setFound] = useState<Patient[]>([]);
  useEffect(() => {
    let current = true;
    if (!debounced.trim()) {
      setFound([]);
      return;
    }
    call(api.GET("/api/v1/patients/", { params: { query: { name_text: debounced.trim(), limit: 10 } } }))
      .then((result) => current && setFound(result.data))
      .catch(() => current && setFound([]));
    return () => {
      current = false;
    };
  }, [debounced]);
  return found;
}

function GroupEditor({ group, onSaved, onClose }: { group: GroupResource | null; onSaved: () => void; onClose: () => void }) {
  const [name, setName] = useState(group?.name ?? "");
  const [members, setMembers] = useState<Member[]>([]);
  const [version, setVersion] = useState<string | undefined>(undefined);
  const [loadError, setLoadError] = useState<unknown>(null);
  const [query, setQuery] = useState("");
  const found = usePatientSearch(query);

  // A group being edited, read whole (a search lists no members), and its members' names.
  useEffect(() => {
    if (!group?.id) return;
    void (async () => {
      let whole: GroupResource;
      try {
        whole = (await fhir<GroupResource>(`Group/${group.id}`)).data;
      } catch (caught) {
        setLoadError(caught);
        return;
      }
      setVersion(whole.meta?.versionId);
      const ids = memberIds(whole);
      setMembers(await Promise.all(
      ids.map((id) =>
        call(api.GET("/api/v1/patients/{patient_id}", { params: { path: { patient_id: id } } }))
          .then((patient) => ({ id, name: patient.name }))
          .catch(() => ({ id, name: id })),
      ),
      ));
    })();
  }, [group]);

  const save = useAction(async () => {
    const resource: GroupResource = {
      resourceType: "Group",
      ...(group?.id ? { id: group.id } : {}),
      type: "person",
      actual: true,
      name,
      member: members.map((member) => ({ entity: { reference: `Patient/${member.id}` } })),
    };
    await fhir(group?.id ? `Group/${group.id}` : "Group", {
      method: group?.id ? "PUT" : "POST",
      body: JSON.stringify(resource),
      headers: version ? { "If-Match": `W/"${version}"` } : {},
    });
    onSaved();
  });

  return (
    <form onSubmit={save.onSubmit}>
      <Stack>
        <TextInput label="Name" required value={name} onChange={(event) => setName(event.currentTarget.value)} />
        <TextInput
          label="Add patients"
          description="Type a name: matching patients are listed below"
          value={query}
          onChange={(event) => setQuery(event.currentTarget.value)}
        />
        {found.length > 0 && (
          <List listStyleType="none" spacing={4} aria-label="Matching patients">
            {found.map((patient) => {
              const added = members.some((member) => member.id === patient.id);
              return (
                <List.Item key={patient.id}>
                  <Group gap="xs">
                    <Text size="sm">{patient.name}</Text>
                    <Button
                      size="compact-xs"
                      variant="light"
                      disabled={added}
                      aria-label={`${added ? "Added" : "Add"} ${patient.name}`}
                      onClick={() => setMembers([...members, { id: patient.id, name: patient.name }])}
                    >
                      {added ? "Added" : "Add"}
                    </Button>
                  </Group>
                </List.Item>
              );
            })}
          </List>
        )}
        <Text fw={500} size="sm">
          Members ({members.length})
        </Text>
        {members.length === 0 ? (
          <Text size="sm" c="dimmed">
            No members yet.
          </Text>
        ) : (
          <List listStyleType="none" spacing={4} aria-label="Members">
            {members.map((member) => (
              <List.Item key={member.id}>
                <Group gap="xs">
                  <Text size="sm">{member.name}</Text>
                  <Button
                    size="compact-xs"
                    variant="subtle"
                    color="red"
                    aria-label={`Remove ${member.name}`}
                    onClick={() => setMembers(members.filter((other) => other.id !== member.id))}
                  >
                    Remove
                  </Button>
                </Group>
              </List.Item>
            ))}
          </List>
        )}
        <ErrorAlert error={loadError ?? save.error} />
        <Group justify="flex-end">
          <Button variant="default" onClick={onClose}>
            Cancel
          </Button>
          <Button type="submit" loading={save.busy}>
            Save group
          </Button>
        </Group>
      </Stack>
    </form>
  );
}

export function GroupsPage() {
  const user = useUser();
  const writer = user.is_superuser || user.role === "clinician";
  const [groups, setGroups] = useState<GroupResource[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [editing, setEditing] = useState<GroupResource | "new" | null>(null);
  const [deleting, setDeleting] = useState<GroupResource | null>(null);

  const load = useCallback(async () => {
    try {
      const bundle = await fhir<Bundle<GroupResource>>("Group?_count=200");
      setGroups((bundle.data.entry ?? []).map((entry) => entry.resource));
      setError(null);
    } catch (caught) {
      setError(caught);
    }
  }, []);
  useEffect(() => {
    void load();
  }, [load]);

  const remove = useAction(async () => {
    if (!deleting?.id) return;
    await fhir(`Group/${deleting.id}`, { method: "DELETE" });
    setDeleting(null);
    await load();
  });

  return (
    <Stack>
      <Group justify="space-between">
        <Title order={1}>Patient groups</Title>
        {writer && <Button onClick={() => setEditing("new")}>New group</Button>}
      </Group>
      <Text>Cohorts of patients, for a bulk export of their records (FHIR Group).</Text>
      <ErrorAlert error={error} />
      {groups.length === 0 ? (
        <Text c="dimmed">No groups yet.</Text>
      ) : (
        <Table striped>
          <Table.Thead>
            <Table.Tr>
              <Table.Th>Name</Table.Th>
              <Table.Th>Members</Table.Th>
              {writer && <Table.Th>Actions</Table.Th>}
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {groups.map((group) => (
              <Table.Tr key={group.id}>
                <Table.Td>{group.name}</Table.Td>
                <Table.Td>
                  <Badge variant="light">{group.quantity ?? 0}</Badge>
                </Table.Td>
                {writer && (
                  <Table.Td>
                    <Group gap="xs">
                      <Button size="xs" variant="default" aria-label={`Edit ${group.name}`} onClick={() => setEditing(group)}>
                        Edit
                      </Button>
                      <Button size="xs" variant="subtle" color="red" aria-label={`Delete ${group.name}`} onClick={() => setDeleting(group)}>
                        Delete
                      </Button>
                    </Group>
                  </Table.Td>
                )}
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      )}
      <Modal opened={editing !== null} onClose={() => setEditing(null)} title={editing === "new" ? "New group" : "Edit group"} size="lg">
        {editing !== null && (
          <GroupEditor
            group={editing === "new" ? null : editing}
            onClose={() => setEditing(null)}
            onSaved={() => {
              setEditing(null);
              void load();
            }}
          />
        )}
      </Modal>
      <Modal opened={deleting !== null} onClose={() => setDeleting(null)} title="Delete the group?">
        <Stack>
          <Text>{deleting?.name} will be deleted. Its members stay patients.</Text>
          <ErrorAlert error={remove.error} />
          <Group justify="flex-end">
            <Button variant="default" onClick={() => setDeleting(null)}>
              Keep it
            </Button>
            <Button color="red" loading={remove.busy} onClick={() => void remove.run()}>
              Delete group
            </Button>
          </Group>
        </Stack>
      </Modal>
    </Stack>
  );
}
