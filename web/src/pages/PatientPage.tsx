// One patient: details, attachments (upload by drag-and-drop or file picker with a progress bar
// per file, download, delete) and, for superusers, the patient's audit trail.
import { useCallback, useEffect, useReducer, useRef, useState } from "react";
import { Anchor, Button, Center, Group, Loader, Modal, Paper, Stack, Text, Title } from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { Link, useNavigate, useParams } from "react-router";
import { api, call, callWithEtag, type Attachment, type Patient } from "../api/client";
import { ApiError, messageOf } from "../api/errors";
import { ErrorAlert } from "../components/ErrorAlert";
import { OpenInApp } from "../components/OpenInApp";
import { AttachmentList } from "../components/AttachmentList";
import { UploadPanel } from "../components/UploadPanel";
import { AuditTrail } from "../components/AuditTrail";
import { formatDate, formatDateTime } from "../format";
import { canWrite, useUser } from "../session";
import { mimeTypeOf, sendToStorage, Throughput, uploadsReducer } from "../uploads";
import {
  forgetInterrupted,
  interruptedFor,
  interruptedOf,
  partsInFlightSetting,
  rememberInterrupted,
  uploadParts,
  type Interrupted,
} from "../multipart";

let uploadCounter = 0;

export function PatientPage() {
  const { patientId = "" } = useParams();
  const user = useUser();
  const navigate = useNavigate();
  const [patient, setPatient] = useState<Patient | null>(null);
  const [etag, setEtag] = useState<string | null>(null);
  const [attachments, setAttachments] = useState<Attachment[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const [uploads, dispatch] = useReducer(uploadsReducer, []);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [deleteError, setDeleteError] = useState<unknown>(null);

  const loadAttachments = useCallback(async () => {
    const page = await call(
      api.GET("/api/v1/patients/{patient_id}/attachments", { params: { path: { patient_id: patientId }, query: { limit: 1000 } } }),
    );
    setAttachments(page.data);
  }, [patientId]);

  useEffect(() => {
    let current = true;
    setLoading(true);
    Promise.all([callWithEtag(api.GET("/api/v1/patients/{patient_id}", { params: { path: { patient_id: patientId } } })), loadAttachments()])
      .then(([loaded]) => {
        if (!current) return;
        setPatient(loaded.data);
        setEtag(loaded.etag);
      })
      .catch((caught) => current && setError(caught))
      .finally(() => current && setLoading(false));
    return () => {
      current = false;
    };
  }, [patientId, loadAttachments]);

  // The transfers running on this page: how to pause, resume or cancel each.
  const transfers = useRef(new Map<string, { controller: AbortController; file: File; attachmentId: string }>());
  const [interrupted, setInterrupted] = useState<Interrupted[]>(() => interruptedOf(patientId));
  const refreshInterrupted = useCallback(() => setInterrupted(interruptedOf(patientId)), [patientId]);
  useEffect(() => {
    const running = transfers.current;
    return () => running.forEach((transfer) => transfer.controller.abort("left"));
  }, []);

  async function upload(file: File) {
    uploadCounter += 1;
    const key = `${uploadCounter}-${file.name}`;
    dispatch({ type: "added", key, fileName: file.name, size: file.size });
    // The same file as an interrupted upload: go on with it, sending only what is missing.
    const resumed = interruptedFor(patientId, file);
    if (resumed) {
      dispatch({ type: "created", key, attachmentId: resumed.attachmentId });
      await sendParts(key, file, resumed.attachmentId);
      return;
    }
    try {
      const created = await call(
        api.POST("/api/v1/attachments/", {
          body: { patient_id: patientId, file_name: file.name, mime_type: mimeTypeOf(file.name, file.type), size: file.size },
        }),
      );
      dispatch({ type: "created", key, attachmentId: created.id });
      if (created.upload.type === "multipart") {
        rememberInterrupted({ attachmentId: created.id, patientId, fileName: file.name, size: file.size, lastModified: file.lastModified });
        await sendParts(key, file, created.id);
        return;
      }
      await sendToStorage(created.upload.url, created.upload.method, created.upload.headers, file, (loaded, total) =>
        dispatch({ type: "progress", key, loaded, total }),
      );
      dispatch({ type: "sent", key });
      // Reading the attachment confirms the upload (the API checks the object in storage).
      const confirmed = await call(api.GET("/api/v1/attachments/{attachment_id}", { params: { path: { attachment_id: created.id } } }));
      if (confirmed.status !== "uploaded") throw new Error("Storage has not confirmed the file yet. Refresh in a moment.");
      dispatch({ type: "confirmed", key });
    } catch (caught) {
      dispatch({ type: "failed", key, error: messageOf(caught) });
    } finally {
      await loadAttachments().catch(() => undefined);
    }
  }

  /** Sends what a multipart upload lacks and completes it; a pause or a failure keeps what arrived. */
  async function sendParts(key: string, file: File, attachmentId: string) {
    const controller = new AbortController();
    transfers.current.set(key, { controller, file, attachmentId });
    refreshInterrupted();
    const throughput = new Throughput();
    try {
      await uploadParts(
        attachmentId,
        file,
        partsInFlightSetting(),
        (progress) =>
          dispatch({
            type: "progress",
            key,
            loaded: progress.sent,
            total: progress.total,
            parts: { done: progress.partsDone, count: progress.partCount },
            bytesPerSecond: throughput.add(performance.now(), progress.sent),
          }),
        controller.signal,
      );
      dispatch({ type: "sent", key });
      dispatch({ type: "confirmed", key });
      forgetInterrupted(attachmentId);
      transfers.current.delete(key);
    } catch (caught) {
      if (controller.signal.aborted) {
        if (controller.signal.reason === "pause") dispatch({ type: "paused", key });
      } else {
        dispatch({ type: "paused", key, error: `${messageOf(caught)} The parts sent are kept: resume to send the rest.` });
      }
    } finally {
      refreshInterrupted();
      await loadAttachments().catch(() => undefined);
    }
  }

  function pauseUpload(key: string) {
    transfers.current.get(key)?.controller.abort("pause");
  }

  function resumeUpload(key: string) {
    const transfer = transfers.current.get(key);
    if (!transfer) return;
    dispatch({ type: "resumed", key });
    void sendParts(key, transfer.file, transfer.attachmentId);
  }

  /** Stops an upload for good: the API deletes the attachment and aborts its multipart upload. */
  async function cancelUpload(attachmentId: string, key?: string) {
    if (key) transfers.current.get(key)?.controller.abort("cancel");
    try {
      await call(api.DELETE("/api/v1/attachments/{attachment_id}", { params: { path: { attachment_id: attachmentId } } }));
    } catch (caught) {
      // Already gone is what was wanted.
      if (!(caught instanceof ApiError && caught.status === 404)) {
        notifications.show({ color: "red", message: messageOf(caught) });
        return;
      }
    }
    forgetInterrupted(attachmentId);
    if (key) {
      transfers.current.delete(key);
      dispatch({ type: "failed", key, error: "Upload cancelled." });
    }
    refreshInterrupted();
    await loadAttachments().catch(() => undefined);
  }

  async function deletePatient() {
    setDeleteError(null);
    try {
      await call(
        api.DELETE("/api/v1/patients/{patient_id}", { params: { path: { patient_id: patientId }, header: etag ? { "If-Match": etag } : {} } }),
      );
      notifications.show({ color: "teal", message: "Patient deleted" });
      navigate("/patients", { replace: true });
    } catch (caught) {
      setDeleteError(caught);
    }
  }

  if (loading) {
    return (
      <Center h="30vh">
        <Loader aria-label="Loading patient" />
      </Center>
    );
  }
  if (error || !patient) return <ErrorAlert error={error} title="Could not load the patient" />;

  const writer = canWrite(user);
  return (
    <Stack>
      <Anchor component={Link} to="/patients" size="sm">
        ← All patients
      </Anchor>
      <Group justify="space-between" align="flex-start">
        <Title order={1}>{patient.name}</Title>
        <Group>
          <OpenInApp patientId={patient.id} />
          {writer && (
            <>
            <Button component={Link} to={`/patients/${patient.id}/edit`}>
              Edit
            </Button>
            <Button color="red" variant="outline" onClick={() => setConfirmDelete(true)}>
              Delete patient
            </Button>
            </>
          )}
        </Group>
      </Group>
      <Paper withBorder p="md">
        <Stack gap="xs" component="dl" m={0}>
          <Detail label="Date of birth" value={patient.dob ? formatDate(patient.dob) : "—"} />
          <Detail label="Contact information" value={patient.contact_info ?? "—"} />
          <Detail
            label="Identifiers"
            value={
              patient.identifiers.length
                ? patient.identifiers.map((i) => `${i.value} (${i.system})`).join("\n")
                : "—"
            }
            multiline
          />
          <Detail label="Record updated" value={formatDateTime(patient.updated_at)} />
          <Detail label="Medical history" value={patient.medical_history ?? "—"} multiline />
        </Stack>
      </Paper>

      <Title order={2}>Attachments</Title>
      {writer && (
        <UploadPanel
          uploads={uploads}
          interrupted={interrupted.filter((item) => ![...transfers.current.values()].some((t) => t.attachmentId === item.attachmentId))}
          onFiles={(files) => files.forEach((file) => void upload(file))}
          onDismiss={(key) => dispatch({ type: "dismissed", key })}
          onPause={pauseUpload}
          onResume={resumeUpload}
          onCancel={(upload) => upload.attachmentId && void cancelUpload(upload.attachmentId, upload.key)}
          onCancelInterrupted={(item) => void cancelUpload(item.attachmentId)}
        />
      )}
      <AttachmentList attachments={attachments} canDelete={writer} onChanged={loadAttachments} />

      {user.is_superuser && <AuditTrail patientId={patient.id} />}

      <Modal opened={confirmDelete} onClose={() => setConfirmDelete(false)} title="Delete this patient?">
        <Stack>
          <Text>
            {patient.name}, their record and all {attachments.length} attachments will be deleted. This cannot be undone.
          </Text>
          <ErrorAlert error={deleteError} title="Could not delete" />
          <Group justify="flex-end">
            <Button variant="default" onClick={() => setConfirmDelete(false)}>
              Cancel
            </Button>
            <Button color="red" onClick={deletePatient}>
              Delete patient
            </Button>
          </Group>
        </Stack>
      </Modal>
    </Stack>
  );
}

function Detail({ label, value, multiline = false }: { label: string; value: string; multiline?: boolean }) {
  return (
    <div>
      <Text component="dt" size="sm" fw={600}>
        {label}
      </Text>
      <Text component="dd" m={0} style={multiline ? { whiteSpace: "pre-wrap" } : undefined}>
        {value}
      </Text>
    </div>
  );
}
