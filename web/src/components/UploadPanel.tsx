// Drop files here or pick them; one row per file with its progress and outcome.
import { Button, CloseButton, FileButton, Group, Paper, Progress, Stack, Text } from "@mantine/core";
import { Dropzone } from "@mantine/dropzone";
import { formatBytes } from "../format";
import { isActive, type Upload } from "../uploads";

const phaseText: Record<Upload["phase"], string> = {
  preparing: "Preparing",
  uploading: "Uploading",
  confirming: "Confirming",
  uploaded: "Uploaded",
  failed: "Failed",
};

export function UploadPanel({
  uploads,
  onFiles,
  onDismiss,
}: {
  uploads: Upload[];
  onFiles: (files: File[]) => void;
  onDismiss: (key: string) => void;
}) {
  return (
    <Stack gap="sm">
      <Dropzone onDrop={onFiles} multiple aria-label="Drop files to upload" activateOnClick={false}>
        <Stack align="center" gap={4} py="md" style={{ pointerEvents: "none" }}>
          <Text fw={600}>Drag files here to attach them</Text>
          <Text size="sm" c="dimmed">
            Scans, reports, genomics files: up to 5 GB each
          </Text>
        </Stack>
      </Dropzone>
      <Group>
        <FileButton onChange={(files) => files.length > 0 && onFiles(files)} multiple>
          {(props) => (
            <Button variant="default" {...props}>
              Choose files…
            </Button>
          )}
        </FileButton>
      </Group>
      {uploads.length > 0 && (
        <Stack gap="xs" aria-label="Uploads" role="list">
          {uploads.map((upload) => (
            <Paper key={upload.key} withBorder p="xs" role="listitem">
              <Group justify="space-between" wrap="nowrap" gap="xs">
                <Text size="sm" truncate>
                  {upload.fileName} <Text span c="dimmed" size="xs">({formatBytes(upload.size)})</Text>
                </Text>
                <Group gap="xs" wrap="nowrap">
                  <Text size="sm" c={upload.phase === "failed" ? "red.9" : upload.phase === "uploaded" ? "teal.9" : undefined} aria-live="polite">
                    {phaseText[upload.phase]}
                  </Text>
                  {!isActive(upload) && <CloseButton size="sm" aria-label={`Dismiss ${upload.fileName}`} onClick={() => onDismiss(upload.key)} />}
                </Group>
              </Group>
              <Progress
                mt={6}
                value={Math.round(upload.progress * 100)}
                color={upload.phase === "failed" ? "red" : "teal"}
                aria-label={`Upload of ${upload.fileName}`}
                animated={isActive(upload)}
              />
              {upload.error && (
                <Text size="sm" c="red.9" mt={4} role="alert">
                  {upload.error}
                </Text>
              )}
            </Paper>
          ))}
        </Stack>
      )}
    </Stack>
  );
}
