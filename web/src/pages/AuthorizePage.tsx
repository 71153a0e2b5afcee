// SMART on FHIR's consent: an app sent the user here from the API's authorize endpoint
// (/authorize?request=<id>), after sign-in (RequireUser brings them back). It shows who asks,
// where the answer goes and the access asked for in words; for a patient-level app the user
// picks the patient with the same name search as the patients page. Approve or refuse answer
// the address to send the browser to: the app's redirect URI with a code, or access_denied.
import { useEffect, useState } from "react";
import { Alert, Button, Group, List, Loader, Radio, Stack, Text, TextInput, Title } from "@mantine/core";
import { useDebouncedValue } from "@mantine/hooks";
import { useSearchParams } from "react-router";
import { api, call, type Patient, type Schemas } from "../api/client";
import { ErrorAlert } from "../components/ErrorAlert";
import { useAction } from "../useAction";

type Authorization = Schemas["SmartAuthorization"];

export function AuthorizePage() {
  const [params] = useSearchParams();
  const requestId = params.get("request") ?? "";
  const [authorization, setAuthorization] = useState<Authorization | null>(null);
  const [loadError, setLoadError] = useState<unknown>(null);
  const [name, setName] = useState("");
  const [debouncedName] = useDebouncedValue(name, 250);
  const [patients, setPatients] = useState<Patient[]>([]);
  const [searching, setSearching] = useState(false);
  const [picked, setPicked] = useState<Patient | null>(null);
  const [launchPatient, setLaunchPatient] = useState<Patient | null>(null);
  const patientId = picked?.id ?? "";

  useEffect(() => {
    call(api.GET("/api/v1/smart/authorizations/{id}", { params: { path: { id: requestId } } }))
      .then(setAuthorization)
      .catch(setLoadError);
  }, [requestId]);

  // An EHR launch names its patient: shown, so the user sees whose record they share.
  useEffect(() => {
    const id = authorization?.launch_patient;
    if (!id) return;
    call(api.GET("/api/v1/patients/{patient_id}", { params: { path: { patient_id: id } } }))
      .then(setLaunchPatient)
      .catch(() => setLaunchPatient(null));
  }, [authorization]);

  useEffect(() => {
    if (!authorization?.needs_patient) return;
    let current = true;
    setSearching(true);
    call(
      api.GET("/api/v1/patients/", {
        params: { query: { name_text: debouncedName.trim() || undefined, limit: 10 } },
      }),
    )
      .then((answer) => current && setPatients(answer.data))
      .catch(() => current && setPatients([]))
      .finally(() => current && setSearching(false));
    return () => {
      current = false;
    };
  }, [authorization, debouncedName]);

  const useDecision = (approve: boolean) =>
    useAction(async () => {
      const answer = await call(
        api.POST("/api/v1/smart/authorizations/{id}", {
          params: { path: { id: requestId } },
          body: { approve, patient_id: approve && patientId ? patientId : null },
        }),
      );
      window.location.assign(answer.redirect_to);
    });
  const approve = useDecision(true);
  const refuse = useDecision(false);

  if (loadError) {
    return (
      <Stack>
        <Title order={1}>Connect an app</Title>
        <ErrorAlert error={loadError} />
      </Stack>
    );
  }
  if (!authorization) return <Loader aria-label="Loading the app's request" />;
  const mustPick = authorization.needs_patient && !patientId;

  return (
    <Stack maw={640}>
      <Title order={1}>Connect {authorization.client_name}</Title>
      <Text>
        <strong>{authorization.client_name}</strong> asks to use your CareVault access. Your answer goes back to{" "}
        <strong>{authorization.redirect_origin}</strong>.
      </Text>
      <section aria-labelledby="access-heading">
        <Title order={2} id="access-heading" size="h4">
          If you approve, it may
        </Title>
        {authorization.access.length > 0 ? (
          <List>
            {authorization.access.map((item) => (
              <List.Item key={item.scope}>
                {item.text} <Text span c="dimmed" size="sm">({item.scope})</Text>
              </List.Item>
            ))}
          </List>
        ) : (
          <Alert color="yellow">Nothing it asks for is allowed for your account.</Alert>
        )}
      </section>
      {launchPatient && (
        <Text>
          Patient: <strong>{launchPatient.name}</strong>
          {launchPatient.dob ? ` (born ${launchPatient.dob})` : ""}
        </Text>
      )}
      {authorization.needs_patient && (
        <section aria-labelledby="patient-heading">
          <Title order={2} id="patient-heading" size="h4">
            Which patient may it see?
          </Title>
          <TextInput
            label="Search by name"
            placeholder="Type part of a name"
            value={name}
            onChange={(event) => setName(event.currentTarget.value)}
          />
          <Radio.Group
            label="Patient"
            value={patientId}
            onChange={(id) => setPicked(patients.find((p) => p.id === id) ?? null)}
            mt="sm"
          >
            <Stack gap="xs">
              {patients.map((patient) => (
                <Radio key={patient.id} value={patient.id} label={`${patient.name}${patient.dob ? ` (${patient.dob})` : ""}`} />
              ))}
              {searching && <Loader size="sm" aria-label="Searching" />}
              {!searching && patients.length === 0 && <Text c="dimmed">No patient matches.</Text>}
            </Stack>
          </Radio.Group>
          <Text mt="sm" aria-live="polite">
            {picked ? (
              <>
                Selected: <strong>{picked.name}</strong>
              </>
            ) : (
              "Pick the patient the app may see to approve."
            )}
          </Text>
        </section>
      )}
      <ErrorAlert error={approve.error ?? refuse.error} />
      <Group>
        <Button onClick={() => void approve.run()} loading={approve.busy} disabled={mustPick || authorization.access.length === 0}>
          Approve
        </Button>
        <Button variant="default" onClick={() => void refuse.run()} loading={refuse.busy}>
          Refuse
        </Button>
      </Group>
    </Stack>
  );
}
