// EHR launch from a patient's page: the registered SMART apps that have a launch URL, each opened
// with this patient (and the signed-in user) bound to an opaque launch value the API makes.
import { useEffect, useState } from "react";
import { Button, Menu } from "@mantine/core";
import { api, call, type Schemas } from "../api/client";
import { ErrorAlert } from "./ErrorAlert";

type App = Schemas["SmartApps"]["data"][number];

export function OpenInApp({ patientId }: { patientId: string }) {
  const [apps, setApps] = useState<App[]>([]);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    call(api.GET("/api/v1/smart/apps"))
      .then((answer) => setApps(answer.data))
      .catch(() => setApps([]));
  }, []);
  async function open(clientId: string) {
    setBusy(true);
    setError(null);
    try {
      const answer = await call(api.POST("/api/v1/smart/launch", { body: { client_id: clientId, patient_id: patientId } }));
      window.location.assign(answer.url);
    } catch (caught) {
      setError(caught);
      setBusy(false);
    }
  }
  if (apps.length === 0) return null;
  return (
    <>
      <Menu>
        <Menu.Target>
          <Button variant="default" loading={busy}>
            Open in app
          </Button>
        </Menu.Target>
        <Menu.Dropdown>
          {apps.map((app) => (
            <Menu.Item key={app.client_id} onClick={() => void open(app.client_id)}>
              {app.client_name}
            </Menu.Item>
          ))}
        </Menu.Dropdown>
      </Menu>
      <ErrorAlert error={error} />
    </>
  );
}
