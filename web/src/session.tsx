// Who is signed in, for the pages: the token (from api/client's session) and the user it
// belongs to (GET /users/me). Pages behind RequireUser see a user; a 401 anywhere sends the
// browser to the login page, which brings it back to where it was.
import { createContext, useCallback, useContext, useEffect, useState, type ReactNode } from "react";
import { Navigate, useLocation } from "react-router";
import { Center, Loader } from "@mantine/core";
import { api, call, logOut as endSessions, session, type User } from "./api/client";

interface SessionState {
  user: User | null;
  loading: boolean;
  /** Re-reads the signed-in user (after a login or an edit of one's own account). */
  refresh: () => Promise<void>;
  /** Ends the user's sessions on the API, then in this tab. */
  logOut: () => Promise<void>;
}

const SessionContext = createContext<SessionState | null>(null);

export function SessionProvider({ children }: { children: ReactNode }) {
  const [user, setUser] = useState<User | null>(null);
  const [loading, setLoading] = useState<boolean>(session.token !== null);

  const refresh = useCallback(async () => {
    if (!session.token) {
      setUser(null);
      setLoading(false);
      return;
    }
    // No loading state here: a page that refreshes the user must stay mounted.
    try {
      setUser(await call(api.GET("/api/v1/users/me")));
    } catch {
      // A 401 has already signed the session out; anything else leaves the user unknown.
      setUser(null);
    } finally {
      setLoading(false);
    }
  }, []);

  useEffect(() => {
    void refresh();
    return session.subscribe((token) => {
      if (token === null) setUser(null);
    });
  }, [refresh]);

  const logOut = useCallback(() => endSessions(), []);

  return <SessionContext.Provider value={{ user, loading, refresh, logOut }}>{children}</SessionContext.Provider>;
}

export function useSession(): SessionState {
  const value = useContext(SessionContext);
  if (!value) throw new Error("useSession outside SessionProvider");
  return value;
}

/** The signed-in user; only for pages inside RequireUser. */
export function useUser(): User {
  const { user } = useSession();
  if (!user) throw new Error("useUser outside RequireUser");
  return user;
}

/** Where the login page sends the browser back to (a path of ids, never patient data). */
export interface ReturnTo {
  from?: string;
}

export function RequireUser({ children, superuser = false }: { children: ReactNode; superuser?: boolean }) {
  const { user, loading } = useSession();
  const location = useLocation();
  if (loading) {
    return (
      <Center h="50vh">
        <Loader aria-label="Loading" />
      </Center>
    );
  }
  if (!user) {
    // The consent page's query is the SMART request's opaque id, which it cannot do without.
    const from = location.pathname === "/authorize" ? location.pathname + location.search : location.pathname;
    const state: ReturnTo = { from };
    return <Navigate to="/login" replace state={state} />;
  }
  if (superuser && !user.is_superuser) return <Navigate to="/patients" replace />;
  return <>{children}</>;
}

export function canWrite(user: User): boolean {
  return user.is_superuser || user.role === "clinician";
}
