// One patient: details, attachments (upload by drag-and-drop or file picker with a progress bar
// per file, download, delete) and, for superusers, the patient's audit trail.
import { useCallback, useEffect, useReducer, useState } from "react";
import { Anchor, Button, Center, Group, Loader, Modal, Paper, Stack, Text, Title } from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { Link, useNavigate, useParams } from "react-router";
import { api, call, callWithEtag, type Attachment, type Patient } from "../api/client";
import { messageOf } from "../api/errors";
import { ErrorAlert } from "../components/ErrorAlert";
import { AttachmentList } from "../components/AttachmentList";
import { UploadPanel } from "../components/UploadPanel";
import { AuditTrail } from "../components/AuditTrail";
import { formatDate, formatDateTime } from "../format";
import { canWrite, useUser } from "../session";
import { mimeTypeOf, sendToStorage, uploadsReducer } from "../uploads";

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

  async function upload(file: File) {
    uploadCounter += 1;
    const key = `${uploadCounter}-${file.name}`;
    dispatch({ type: "added", key, fileName: file.name, size: file.size });
    try {
      const created = await call(
        api.POST("/api/v1/attachments/", {
          body: { patient_id: patientId, file_name: file.name, mime_type: mimeTypeOf(file.name, file.type), size: file.size },
        }),
      );
      dispatch({ type: "created", key, attachmentId: created.id });
      await sendToStorage(created.upload_url, created.upload_method, created.upload_headers, file, (loaded, total) =>
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
        {writer && (
          <Group>
            <Button component={Link} to={`/patients/${patient.id}/edit`}>
              Edit
            </Button>
            <Button color="red" variant="outline" onClick={() => setConfirmDelete(true)}>
              Delete patient
            </Button>
          </Group>
        )}
      </Group>
      <Paper withBorder p="md">
        <Stack gap="xs" component="dl" m={0}>
          <Detail label="Date of birth" value={patient.dob ? formatDate(patient.dob) : "—"} />
          <Detail label="Contact information" value={patient.contact_info ?? "—"} />
          <Detail label="Record updated" value={formatDateTime(patient.updated_at)} />
          <Detail label="Medical history" value={patient.medical_history ?? "—"} multiline />
        </Stack>
      </Paper>

      <Title order={2}>Attachments</Title>
      {writer && <UploadPanel uploads={uploads} onFiles={(files) => files.forEach((file) => void upload(file))} onDismiss={(key) => dispatch({ type: "dismissed", key })} />}
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
