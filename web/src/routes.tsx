import { createBrowserRouter, Navigate, Outlet } from "react-router";
import { SessionProvider, RequireUser } from "./session";
import { Shell } from "./components/Shell";
import { LoginPage } from "./pages/LoginPage";
import { ForgotPasswordPage } from "./pages/ForgotPasswordPage";
import { ResetPasswordPage } from "./pages/ResetPasswordPage";
import { PatientsPage } from "./pages/PatientsPage";
import { PatientFormPage } from "./pages/PatientFormPage";
import { PatientPage } from "./pages/PatientPage";
import { UsersPage } from "./pages/UsersPage";
import { AccountPage } from "./pages/AccountPage";
import { NotFoundPage } from "./pages/NotFoundPage";
import { AuthorizePage } from "./pages/AuthorizePage";
import { ConnectedAppsPage } from "./pages/ConnectedAppsPage";
import { GroupsPage } from "./pages/GroupsPage";
import { ExportsPage } from "./pages/ExportsPage";

function Root() {
  return (
    <SessionProvider>
      <Outlet />
    </SessionProvider>
  );
}

function SignedIn() {
  return (
    <RequireUser>
      <Shell>
        <Outlet />
      </Shell>
    </RequireUser>
  );
}

export const router = createBrowserRouter([
  {
    element: <Root />,
    children: [
      { path: "/login", element: <LoginPage /> },
      { path: "/forgot-password", element: <ForgotPasswordPage /> },
      { path: "/reset-password", element: <ResetPasswordPage /> },
      {
        element: <SignedIn />,
        children: [
          { path: "/", element: <Navigate to="/patients" replace /> },
          { path: "/patients", element: <PatientsPage /> },
          { path: "/patients/new", element: <PatientFormPage /> },
          { path: "/patients/:patientId", element: <PatientPage /> },
          { path: "/patients/:patientId/edit", element: <PatientFormPage /> },
          {
            path: "/users",
            element: (
              <RequireUser superuser>
                <UsersPage />
              </RequireUser>
            ),
          },
          {
            path: "/connected-apps",
            element: (
              <RequireUser superuser>
                <ConnectedAppsPage />
              </RequireUser>
            ),
          },
          { path: "/groups", element: <GroupsPage /> },
          {
            path: "/exports",
            element: (
              <RequireUser superuser>
                <ExportsPage />
              </RequireUser>
            ),
          },
          { path: "/account", element: <AccountPage /> },
          { path: "/authorize", element: <AuthorizePage /> },
          { path: "*", element: <NotFoundPage /> },
        ],
      },
    ],
  },
]);
