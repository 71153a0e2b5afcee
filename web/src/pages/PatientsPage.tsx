// Patients: one search box (name, as you type) and filters for history text, attachment type and
// birth-date range, with sort and paging. The search lives in memory, never in the address bar
// (a name is patient data); coming back to the page restores it.
import { useEffect, useRef, useState } from "react";
import { Anchor, Button, Group, Pagination, Select, SimpleGrid, Stack, Table, Text, TextInput, Title } from "@mantine/core";
import { useDebouncedValue } from "@mantine/hooks";
import { Link } from "react-router";
import { api, call, type Patient } from "../api/client";
import { ErrorAlert } from "../components/ErrorAlert";
import { canWrite, useUser } from "../session";
import { formatDate } from "../format";

type Sort = "name" | "-name" | "dob" | "-dob" | "created_at" | "-created_at";

interface Search {
  name: string;
  history: string;
  mimeType: string;
  dobFrom: string;
  dobTo: string;
  sort: Sort;
  page: number;
}

const PAGE_SIZE = 20;
const emptySearch: Search = { name: "", history: "", mimeType: "", dobFrom: "", dobTo: "", sort: "name", page: 1 };
let lastSearch: Search = emptySearch;

const sorts: { value: Sort; label: string }[] = [
  { value: "name", label: "Name A to Z" },
  { value: "-name", label: "Name Z to A" },
  { value: "dob", label: "Oldest first" },
  { value: "-dob", label: "Youngest first" },
  { value: "-created_at", label: "Newest records" },
  { value: "created_at", label: "Oldest records" },
];

const mimeTypes = [
  { value: "", label: "Any" },
  { value: "application/pdf", label: "PDF" },
  { value: "image/jpeg", label: "JPEG image" },
  { value: "image/png", label: "PNG image" },
  { value: "application/dicom", label: "DICOM scan" },
  { value: "text/plain", label: "Text" },
  { value: "application/octet-stream", label: "Other binary" },
];

export function PatientsPage() {
  const user = useUser();
  const [search, setSearch] = useState<Search>(lastSearch);
  const [debounced] = useDebouncedValue(search, 250);
  const [result, setResult] = useState<{ data: Patient[]; count: number | null } | null>(null);
  // Where each page starts, learnt from the page before it (next_cursor): the next page costs
  // the API the same however deep it is. A page reached by a jump uses skip. Kept per search.
  const cursors = useRef<{ key: string; starts: Map<number, string> }>({ key: "", starts: new Map() });
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(false);

  const update = (change: Partial<Search>) => setSearch((current) => ({ ...current, page: 1, ...change }));

  useEffect(() => {
    lastSearch = debounced;
    let current = true;
    setLoading(true);
    const { page, ...criteria } = debounced;
    const key = JSON.stringify(criteria);
    if (cursors.current.key !== key) cursors.current = { key, starts: new Map() };
    const cursor = cursors.current.starts.get(page);
    call(
      api.GET("/api/v1/patients/", {
        params: {
          query: {
            name_text: debounced.name.trim() || undefined,
            history_text: debounced.history.trim() || undefined,
            has_attachment_mime_type: debounced.mimeType || undefined,
            dob_from: debounced.dobFrom || undefined,
            dob_to: debounced.dobTo || undefined,
            sort: debounced.sort,
            ...(cursor ? { cursor } : { skip: (page - 1) * PAGE_SIZE }),
            limit: PAGE_SIZE,
          },
        },
      }),
    )
      .then((answer) => {
        if (!current) return;
        if (answer.next_cursor) cursors.current.starts.set(page + 1, answer.next_cursor);
        setResult(answer);
        setError(null);
      })
      .catch((caught) => current && setError(caught))
      .finally(() => current && setLoading(false));
    return () => {
      current = false;
    };
  }, [debounced]);

  const total = result?.count ?? 0;
  const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));

  return (
    <Stack>
      <Group justify="space-between">
        <Title order={1}>Patients</Title>
        {canWrite(user) && (
          <Button component={Link} to="/patients/new">
            New patient
          </Button>
        )}
      </Group>
      <form role="search" aria-label="Patients" onSubmit={(event) => event.preventDefault()}>
        <Stack gap="sm">
          <TextInput
            label="Search by name"
            placeholder="Type part of a name"
            value={search.name}
            onChange={(e) => update({ name: e.currentTarget.value })}
            autoFocus
          />
          <SimpleGrid cols={{ base: 1, xs: 2, md: 5 }} spacing="sm">
            <TextInput label="Medical history contains" value={search.history} onChange={(e) => update({ history: e.currentTarget.value })} />
            <Select
              label="Has attachment of type"
              data={mimeTypes}
              value={search.mimeType}
              onChange={(value) => update({ mimeType: value ?? "" })}
              allowDeselect={false}
            />
            <TextInput label="Born from" type="date" value={search.dobFrom} onChange={(e) => update({ dobFrom: e.currentTarget.value })} />
            <TextInput label="Born until" type="date" value={search.dobTo} onChange={(e) => update({ dobTo: e.currentTarget.value })} />
            <Select label="Sort" data={sorts} value={search.sort} onChange={(value) => update({ sort: (value as Sort) ?? "name" })} allowDeselect={false} />
          </SimpleGrid>
          <Group>
            <Button variant="default" size="xs" onClick={() => setSearch(emptySearch)}>
              Clear search
            </Button>
          </Group>
        </Stack>
      </form>
      <ErrorAlert error={error} />
      <Text size="sm" role="status" aria-live="polite">
        {loading ? "Searching…" : result ? `${total} ${total === 1 ? "patient" : "patients"}` : ""}
      </Text>
      {result && result.data.length > 0 && (
        <Table.ScrollContainer minWidth={480}>
          <Table striped highlightOnHover>
            <Table.Thead>
              <Table.Tr>
                <Table.Th scope="col">Name</Table.Th>
                <Table.Th scope="col">Date of birth</Table.Th>
                <Table.Th scope="col">Contact</Table.Th>
              </Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {result.data.map((patient) => (
                <Table.Tr key={patient.id}>
                  <Table.Td>
                    <Anchor component={Link} to={`/patients/${patient.id}`}>
                      {patient.name}
                    </Anchor>
                  </Table.Td>
                  <Table.Td>{patient.dob ? formatDate(patient.dob) : "—"}</Table.Td>
                  <Table.Td>{patient.contact_info ?? "—"}</Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
        </Table.ScrollContainer>
      )}
      {pages > 1 && (
        <Pagination
          total={pages}
          value={search.page}
          onChange={(page) => setSearch((current) => ({ ...current, page }))}
          getControlProps={(control) => ({ "aria-label": `${control} page` })}
          getItemProps={(page) => ({ "aria-label": `Page ${page}` })}
        />
      )}
    </Stack>
  );
}
