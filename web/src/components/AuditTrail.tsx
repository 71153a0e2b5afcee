// Who did what to this patient's record, newest first (superusers only; the API enforces it).
import { useCallback, useEffect, useState } from "react";
import { Badge, Button, Stack, Table, Text, Title } from "@mantine/core";
import { api, call, type AuditEvent } from "../api/client";
import { ErrorAlert } from "./ErrorAlert";
import { formatDateTime } from "../format";

const PAGE_SIZE = 50;

export function AuditTrail({ patientId }: { patientId: string }) {
  const [events, setEvents] = useState<AuditEvent[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(false);

  const load = useCallback(
    async (from: string | null) => {
      setLoading(true);
      try {
        const page = await call(
          api.GET("/api/v1/audit-events/", { params: { query: { patient_id: patientId, limit: PAGE_SIZE, cursor: from ?? undefined } } }),
        );
        setEvents((current) => (from ? [...current, ...page.data] : page.data));
        setCursor(page.next_cursor ?? null);
        setError(null);
      } catch (caught) {
        setError(caught);
      } finally {
        setLoading(false);
      }
    },
    [patientId],
  );

  useEffect(() => {
    void load(null);
  }, [load]);

  return (
    <Stack>
      <Title order={2}>Audit trail</Title>
      <ErrorAlert error={error} />
      {events.length === 0 && !loading ? (
        <Text c="dimmed">No events.</Text>
      ) : (
        <Table.ScrollContainer minWidth={560}>
          <Table aria-label="Audit trail">
            <Table.Thead>
              <Table.Tr>
                <Table.Th scope="col">When</Table.Th>
                <Table.Th scope="col">Who</Table.Th>
                <Table.Th scope="col">Action</Table.Th>
                <Table.Th scope="col">Outcome</Table.Th>
              </Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {events.map((event) => (
                <Table.Tr key={event.id}>
                  <Table.Td>{formatDateTime(event.occurred_at)}</Table.Td>
                  <Table.Td>{event.actor_email ?? "—"}</Table.Td>
                  <Table.Td>{event.action}</Table.Td>
                  <Table.Td>
                    <Badge variant="outline" color={event.outcome === "success" ? "teal.9" : "red.9"}>
                      {event.outcome}
                    </Badge>
                  </Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
        </Table.ScrollContainer>
      )}
      {cursor && (
        <Button variant="default" onClick={() => load(cursor)} loading={loading} w="fit-content">
          Show older events
        </Button>
      )}
    </Stack>
  );
}
