// A patient's attachments: download (a short-lived link straight to storage) and delete.
import { useState } from "react";
import { Badge, Button, Group, Modal, Stack, Table, Text } from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { api, call, type Attachment } from "../api/client";
import { messageOf } from "../api/errors";
import { ErrorAlert } from "./ErrorAlert";
import { formatBytes, formatDateTime } from "../format";

async function download(attachment: Attachment) {
  // The API hands out a presigned URL; the browser fetches the file from storage itself, as a
  // download (the URL's Content-Disposition), so large files never pass through the page.
  const { url } = await call(
    api.GET("/api/v1/attachments/{attachment_id}/content", {
      params: { path: { attachment_id: attachment.id }, query: { redirect: false } },
    }),
  );
  const link = document.createElement("a");
  link.href = url;
  link.rel = "noopener";
  document.body.appendChild(link);
  link.click();
  link.remove();
}

export function AttachmentList({ attachments, canDelete, onChanged }: { attachments: Attachment[]; canDelete: boolean; onChanged: () => Promise<void> }) {
  const [deleting, setDeleting] = useState<Attachment | null>(null);
  const [error, setError] = useState<unknown>(null);

  async function remove(attachment: Attachment) {
    setError(null);
    try {
      await call(api.DELETE("/api/v1/attachments/{attachment_id}", { params: { path: { attachment_id: attachment.id } } }));
      setDeleting(null);
      notifications.show({ color: "teal", message: `${attachment.file_name} deleted` });
      await onChanged();
    } catch (caught) {
      setError(caught);
    }
  }

  if (attachments.length === 0) return <Text c="dimmed">No attachments yet.</Text>;
  return (
    <>
      <Table.ScrollContainer minWidth={560}>
        <Table aria-label="Attachments">
          <Table.Thead>
            <Table.Tr>
              <Table.Th scope="col">File</Table.Th>
              <Table.Th scope="col">Type</Table.Th>
              <Table.Th scope="col">Size</Table.Th>
              <Table.Th scope="col">Status</Table.Th>
              <Table.Th scope="col">Added</Table.Th>
              <Table.Th scope="col">
                <span className="visually-hidden">Actions</span>
              </Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {attachments.map((attachment) => (
              <Table.Tr key={attachment.id} data-attachment={attachment.file_name}>
                <Table.Td>{attachment.file_name}</Table.Td>
                <Table.Td>{attachment.mime_type}</Table.Td>
                <Table.Td>{formatBytes(attachment.size)}</Table.Td>
                <Table.Td>
                  <StatusBadge status={attachment.status} />
                </Table.Td>
                <Table.Td>{formatDateTime(attachment.created_at)}</Table.Td>
                <Table.Td>
                  <Group gap="xs" wrap="nowrap">
                    <Button
                      size="xs"
                      variant="light"
                      disabled={attachment.status !== "uploaded"}
                      aria-label={`Download ${attachment.file_name}`}
                      onClick={() => download(attachment).catch((caught) => notifications.show({ color: "red", title: "Download failed", message: messageOf(caught) }))}
                    >
                      Download
                    </Button>
                    {canDelete && (
                      <Button size="xs" variant="subtle" color="red" aria-label={`Delete ${attachment.file_name}`} onClick={() => setDeleting(attachment)}>
                        Delete
                      </Button>
                    )}
                  </Group>
                </Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      </Table.ScrollContainer>
      <Modal opened={deleting !== null} onClose={() => setDeleting(null)} title="Delete this attachment?">
        <Stack>
          <Text>{deleting?.file_name} will be deleted from storage. This cannot be undone.</Text>
          <ErrorAlert error={error} title="Could not delete" />
          <Group justify="flex-end">
            <Button variant="default" onClick={() => setDeleting(null)}>
              Cancel
            </Button>
            <Button color="red" onClick={() => deleting && remove(deleting)}>
              Delete
            </Button>
          </Group>
        </Stack>
      </Modal>
    </>
  );
}

function StatusBadge({ status }: { status: Attachment["status"] }) {
  return (
    <Badge color={status === "uploaded" ? "teal.9" : "gray.7"} variant="outline">
      {status === "uploaded" ? "Uploaded" : "Pending"}
    </Badge>
  );
}
