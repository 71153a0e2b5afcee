// User administration (superusers): list, create, change role, activate or deactivate, reset a
// user's second factors.
import { useCallback, useEffect, useState } from "react";
import { Badge, Button, Checkbox, Group, Modal, Pagination, PasswordInput, Select, Stack, Switch, Table, Text, TextInput, Title } from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { api, call, type Role, type User } from "../api/client";
import { messageOf } from "../api/errors";
import { ErrorAlert } from "../components/ErrorAlert";
import { useSession, useUser } from "../session";
import { useAction } from "../useAction";

const PAGE_SIZE = 50;
const roles: { value: Role; label: string }[] = [
  { value: "clinician", label: "Clinician (reads and writes)" },
  { value: "viewer", label: "Viewer (reads only)" },
];

export function UsersPage() {
  const me = useUser();
  const { refresh } = useSession();
  const [users, setUsers] = useState<User[]>([]);
  const [count, setCount] = useState(0);
  const [page, setPage] = useState(1);
  const [error, setError] = useState<unknown>(null);
  const [creating, setCreating] = useState(false);

  const load = useCallback(async () => {
    try {
      const result = await call(api.GET("/api/v1/users/", { params: { query: { skip: (page - 1) * PAGE_SIZE, limit: PAGE_SIZE } } }));
      setUsers(result.data);
      setCount(result.count);
      setError(null);
    } catch (caught) {
      setError(caught);
    }
  }, [page]);

  useEffect(() => {
    void load();
  }, [load]);

  async function change(user: User, body: { role?: Role; is_active?: boolean }, done: string) {
    try {
      await call(api.PATCH("/api/v1/users/{user_id}", { params: { path: { user_id: user.id } }, body }));
      notifications.show({ color: "teal", message: done });
      await load();
      if (user.id === me.id) await refresh();
    } catch (caught) {
      notifications.show({ color: "red", title: "Could not change the user", message: messageOf(caught) });
    }
  }

  /** A lost phone or key: every factor of the user removed, their sessions ended. */
  async function resetFactors(user: User) {
    if (!window.confirm(`Remove every second factor of ${user.email} and end their sessions?`)) return;
    try {
      await call(api.DELETE("/api/v1/users/{user_id}/mfa", { params: { path: { user_id: user.id } } }));
      notifications.show({ color: "teal", message: `${user.email}'s second factors were removed` });
    } catch (caught) {
      notifications.show({ color: "red", title: "Could not reset the second factors", message: messageOf(caught) });
    }
  }

  return (
    <Stack>
      <Group justify="space-between">
        <Title order={1}>Users</Title>
        <Button onClick={() => setCreating(true)}>New user</Button>
      </Group>
      <ErrorAlert error={error} />
      <Table.ScrollContainer minWidth={640}>
        <Table striped aria-label="Users">
          <Table.Thead>
            <Table.Tr>
              <Table.Th scope="col">Email</Table.Th>
              <Table.Th scope="col">Name</Table.Th>
              <Table.Th scope="col">Role</Table.Th>
              <Table.Th scope="col">Active</Table.Th>
              <Table.Th scope="col">Second factor</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {users.map((user) => (
              <Table.Tr key={user.id} data-user={user.email}>
                <Table.Td>
                  {user.email} {user.is_superuser && <Badge variant="outline" color="teal.9">Superuser</Badge>}
                </Table.Td>
                <Table.Td>{user.full_name ?? "—"}</Table.Td>
                <Table.Td>
                  <Select
                    aria-label={`Role of ${user.email}`}
                    data={roles}
                    value={user.role}
                    allowDeselect={false}
                    disabled={user.id === me.id}
                    onChange={(value) => value && value !== user.role && change(user, { role: value as Role }, `${user.email} is now a ${value}`)}
                    w={230}
                  />
                </Table.Td>
                <Table.Td>
                  <Switch
                    aria-label={`${user.email} is active`}
                    checked={user.is_active}
                    disabled={user.id === me.id}
                    onChange={(event) =>
                      change(user, { is_active: event.currentTarget.checked }, `${user.email} ${event.currentTarget.checked ? "activated" : "deactivated"}`)
                    }
                  />
                </Table.Td>
                <Table.Td>
                  {user.id !== me.id && (
                    <Button size="xs" variant="default" onClick={() => void resetFactors(user)} aria-label={`Reset the second factors of ${user.email}`}>
                      Reset
                    </Button>
                  )}
                </Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      </Table.ScrollContainer>
      {count > PAGE_SIZE && <Pagination total={Math.ceil(count / PAGE_SIZE)} value={page} onChange={setPage} getItemProps={(p) => ({ "aria-label": `Page ${p}` })} />}
      <CreateUserModal
        opened={creating}
        onClose={() => setCreating(false)}
        onCreated={async (user) => {
          setCreating(false);
          notifications.show({ color: "teal", message: `${user.email} created` });
          await load();
        }}
      />
    </Stack>
  );
}

function CreateUserModal({ opened, onClose, onCreated }: { opened: boolean; onClose: () => void; onCreated: (user: User) => Promise<void> }) {
  const [email, setEmail] = useState("");
  const [fullName, setFullName] = useState("");
  const [password, setPassword] = useState("");
  const [role, setRole] = useState<Role>("clinician");
  const [superuser, setSuperuser] = useState(false);
  const { busy, error, onSubmit } = useAction(async () => {
    const user = await call(
      api.POST("/api/v1/users/", { body: { email, password, full_name: fullName.trim() || null, role, is_superuser: superuser, is_active: true } }),
    );
    setEmail("");
    setFullName("");
    setPassword("");
    setRole("clinician");
    setSuperuser(false);
    await onCreated(user);
  });

  return (
    <Modal opened={opened} onClose={onClose} title="New user">
      <form onSubmit={onSubmit} noValidate>
        <Stack>
          <ErrorAlert error={error} title="Could not create the user" />
          <TextInput label="Email" type="email" required autoComplete="off" value={email} onChange={(e) => setEmail(e.currentTarget.value)} data-autofocus />
          <TextInput label="Full name" autoComplete="off" value={fullName} onChange={(e) => setFullName(e.currentTarget.value)} />
          <PasswordInput
            label="Initial password"
            description="8 to 128 characters. The user is also emailed a link to set their own."
            required
            autoComplete="new-password"
            value={password}
            onChange={(e) => setPassword(e.currentTarget.value)}
          />
          <Select label="Role" data={roles} value={role} onChange={(value) => setRole((value as Role) ?? "clinician")} allowDeselect={false} />
          <Checkbox label="Superuser (manages users, reads the audit trail)" checked={superuser} onChange={(e) => setSuperuser(e.currentTarget.checked)} />
          <Text size="xs" c="dimmed">
            Superusers can do everything, whatever their role.
          </Text>
          <Group justify="flex-end">
            <Button variant="default" onClick={onClose}>
              Cancel
            </Button>
            <Button type="submit" loading={busy}>
              Create user
            </Button>
          </Group>
        </Stack>
      </form>
    </Modal>
  );
}
