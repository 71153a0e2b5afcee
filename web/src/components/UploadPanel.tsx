// Drop files here or pick them; one row per file with its progress and outcome. Large files go
// up in parts: their rows show the parts stored, throughput and time left, and can be paused,
// resumed and cancelled; uploads interrupted by a reload are listed to be resumed by choosing
// the same file again.
import { Button, CloseButton, FileButton, Group, NativeSelect, Paper, Progress, Stack, Text } from "@mantine/core";
import { Dropzone } from "@mantine/dropzone";
import { useRef, useState } from "react";
import { formatBytes, formatDuration } from "../format";
import { partsInFlightSetting, setPartsInFlight, type Interrupted } from "../multipart";
import { isActive, secondsLeft, type Upload } from "../uploads";

const phaseText: Record<Upload["phase"], string> = {
  preparing: "Preparing",
  uploading: "Uploading",
  paused: "Paused",
  confirming: "Confirming",
  uploaded: "Uploaded",
  failed: "Failed",
};

function details(upload: Upload): string {
  const parts = upload.parts ? `${upload.parts.done} of ${upload.parts.count} parts` : "";
  const rate = upload.bytesPerSecond ? `${formatBytes(upload.bytesPerSecond)}/s` : "";
  const left = secondsLeft(upload);
  return [parts, rate, left !== undefined ? `${formatDuration(left)} left` : ""].filter(Boolean).join(" · ");
}

export function UploadPanel({
  uploads,
  interrupted,
  onFiles,
  onDismiss,
  onPause,
  onResume,
  onCancel,
  onCancelInterrupted,
}: {
  uploads: Upload[];
  interrupted: Interrupted[];
  onFiles: (files: File[]) => void;
  onDismiss: (key: string) => void;
  onPause: (key: string) => void;
  onResume: (key: string) => void;
  onCancel: (upload: Upload) => void;
  onCancelInterrupted: (upload: Interrupted) => void;
}) {
  const [partsInFlight, choosePartsInFlight] = useState(partsInFlightSetting);
  // Cleared after each choice: choosing the same file again (to resume it) must fire again.
  const resetPicker = useRef<() => void>(null);
  return (
    <Stack gap="sm">
      <Dropzone onDrop={onFiles} multiple aria-label="Drop files to upload" activateOnClick={false}>
        <Stack align="center" gap={4} py="md" style={{ pointerEvents: "none" }}>
          <Text fw={600}>Drag files here to attach them</Text>
          <Text size="sm" c="dimmed">
            Scans, reports, genomics files: up to 5 TB each; large files go in resumable parts
          </Text>
        </Stack>
      </Dropzone>
      <Group justify="space-between" align="flex-end">
        <FileButton
          resetRef={resetPicker}
          onChange={(files) => {
            if (files.length > 0) onFiles(files);
            resetPicker.current?.();
          }}
          multiple
        >
          {(props) => (
            <Button variant="default" {...props}>
              Choose files…
            </Button>
          )}
        </FileButton>
        <NativeSelect
          label="Parts in flight"
          description="For large files"
          size="xs"
          data={["1", "2", "4", "8"]}
          value={String(partsInFlight)}
          onChange={(event) => {
            const count = Number(event.currentTarget.value);
            setPartsInFlight(count);
            choosePartsInFlight(count);
          }}
        />
      </Group>
      {interrupted.length > 0 && (
        <Stack gap="xs" aria-label="Interrupted uploads" role="list">
          {interrupted.map((item) => (
            <Paper key={item.attachmentId} withBorder p="xs" role="listitem">
              <Group justify="space-between" wrap="nowrap" gap="xs">
                <Text size="sm">
                  {item.fileName} <Text span c="dimmed" size="xs">({formatBytes(item.size)})</Text>: interrupted. Choose or drop the same
                  file to resume; the parts already sent are kept.
                </Text>
                <Button size="xs" variant="subtle" color="red" onClick={() => onCancelInterrupted(item)}>
                  Cancel upload
                </Button>
              </Group>
            </Paper>
          ))}
        </Stack>
      )}
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
                  {upload.parts && upload.phase === "uploading" && (
                    <Button size="compact-xs" variant="default" onClick={() => onPause(upload.key)}>
                      Pause
                    </Button>
                  )}
                  {upload.parts && upload.phase === "paused" && (
                    <Button size="compact-xs" variant="default" onClick={() => onResume(upload.key)}>
                      Resume
                    </Button>
                  )}
                  {upload.parts && (upload.phase === "uploading" || upload.phase === "paused") && (
                    <Button size="compact-xs" variant="subtle" color="red" onClick={() => onCancel(upload)}>
                      Cancel
                    </Button>
                  )}
                  {!isActive(upload) && <CloseButton size="sm" aria-label={`Dismiss ${upload.fileName}`} onClick={() => onDismiss(upload.key)} />}
                </Group>
              </Group>
              <Progress
                mt={6}
                value={Math.round(upload.progress * 100)}
                color={upload.phase === "failed" ? "red" : "teal"}
                aria-label={`Upload of ${upload.fileName}`}
                animated={upload.phase === "uploading" || upload.phase === "confirming"}
              />
              {upload.parts && (
                <Text size="xs" c="dimmed" mt={4} data-testid="upload-details">
                  {details(upload)}
                </Text>
              )}
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
