// Create a patient, or edit one. An edit sends the ETag it loaded as If-Match: when someone else
// saved the record in between, the API answers 412 and the page says so instead of overwriting.
import { useEffect, useState } from "react";
import { Alert, Button, Center, Group, Loader, Stack, TextInput, Textarea, Title } from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { Link, useNavigate, useParams } from "react-router";
import { api, call, callWithEtag, type Patient } from "../api/client";
import { ApiError } from "../api/errors";
import { ErrorAlert } from "../components/ErrorAlert";
import { useAction } from "../useAction";

interface Fields {
  name: string;
  dob: string;
  contact_info: string;
  medical_history: string;
}

const blank: Fields = { name: "", dob: "", contact_info: "", medical_history: "" };

function fieldsOf(patient: Patient): Fields {
  return {
    name: patient.name,
    dob: patient.dob ? patient.dob.slice(0, 10) : "",
    contact_info: patient.contact_info ?? "",
    medical_history: patient.medical_history ?? "",
  };
}

function bodyOf(fields: Fields) {
  return {
    name: fields.name,
    dob: fields.dob || null,
    contact_info: fields.contact_info.trim() ? fields.contact_info : null,
    medical_history: fields.medical_history.trim() ? fields.medical_history : null,
  };
}

export function PatientFormPage() {
  const { patientId } = useParams();
  const editing = patientId !== undefined;
  const navigate = useNavigate();
  const [fields, setFields] = useState<Fields>(blank);
  const [etag, setEtag] = useState<string | null>(null);
  const [loading, setLoading] = useState(editing);
  const [loadError, setLoadError] = useState<unknown>(null);
  const [conflict, setConflict] = useState(false);

  async function load(id: string) {
    setLoading(true);
    try {
      const { data, etag: loadedEtag } = await callWithEtag(api.GET("/api/v1/patients/{patient_id}", { params: { path: { patient_id: id } } }));
      setFields(fieldsOf(data));
      setEtag(loadedEtag);
      setConflict(false);
      save.setError(null);
    } catch (caught) {
      setLoadError(caught);
    } finally {
      setLoading(false);
    }
  }

  useEffect(() => {
    if (patientId) void load(patientId);
  }, [patientId]);

  const set = (name: keyof Fields) => (event: { currentTarget: { value: string } }) => {
    const value = event.currentTarget.value;
    setFields((current) => ({ ...current, [name]: value }));
  };

  const save = useAction(async () => {
    setConflict(false);
    try {
      if (patientId) {
        await call(
          api.PATCH("/api/v1/patients/{patient_id}", {
            params: { path: { patient_id: patientId }, header: etag ? { "If-Match": etag } : {} },
            body: bodyOf(fields),
          }),
        );
        notifications.show({ color: "teal", message: "Patient saved" });
        navigate(`/patients/${patientId}`);
      } else {
        const created = await call(api.POST("/api/v1/patients/", { body: bodyOf(fields) }));
        notifications.show({ color: "teal", message: "Patient created" });
        navigate(`/patients/${created.id}`);
      }
    } catch (caught) {
      // Someone saved in between: say so (and offer the current version), not a bare error.
      if (caught instanceof ApiError && caught.status === 412) setConflict(true);
      else throw caught;
    }
  });

  if (loading) {
    return (
      <Center h="30vh">
        <Loader aria-label="Loading patient" />
      </Center>
    );
  }
  if (loadError) return <ErrorAlert error={loadError} title="Could not load the patient" />;

  return (
    <Stack maw={720}>
      <Title order={1}>{editing ? "Edit patient" : "New patient"}</Title>
      <form onSubmit={save.onSubmit} noValidate>
        <Stack>
          {conflict && (
            <Alert color="yellow" role="alert" title="This record was changed by someone else" styles={{ title: { color: "var(--mantine-color-text)" } }}>
              <Stack gap="xs" align="flex-start">
                <span>Someone saved this patient after you opened it, so your changes were not saved. Reload to see the current version, then make your changes again.</span>
                <Button size="xs" variant="default" onClick={() => patientId && load(patientId)}>
                  Reload the current version
                </Button>
              </Stack>
            </Alert>
          )}
          <ErrorAlert error={save.error} title="Could not save" />
          <TextInput label="Name" required maxLength={255} value={fields.name} onChange={set("name")} autoFocus autoComplete="off" />
          <TextInput label="Date of birth" type="date" min="1900-01-01" value={fields.dob} onChange={set("dob")} />
          <TextInput label="Contact information" maxLength={255} value={fields.contact_info} onChange={set("contact_info")} autoComplete="off" />
          <Textarea label="Medical history" autosize minRows={6} maxRows={20} maxLength={100000} value={fields.medical_history} onChange={set("medical_history")} />
          <Group>
            <Button type="submit" loading={save.busy}>
              {editing ? "Save changes" : "Create patient"}
            </Button>
            <Button variant="default" component={Link} to={patientId ? `/patients/${patientId}` : "/patients"}>
              Cancel
            </Button>
          </Group>
        </Stack>
      </form>
    </Stack>
  );
}
