// The frame of every signed-in page: the header with navigation (a menu on phone widths), the
// signed-in user, and log out.
import type { ReactNode } from "react";
import { AppShell, Burger, Button, Group, NavLink, Text, Title, VisuallyHidden } from "@mantine/core";
import { useDisclosure } from "@mantine/hooks";
import { Link, useLocation } from "react-router";
import { useSession, useUser } from "../session";

export function Shell({ children }: { children: ReactNode }) {
  const [opened, { toggle, close }] = useDisclosure();
  const user = useUser();
  const { logOut } = useSession();
  const location = useLocation();
  const links = [
    { to: "/patients", label: "Patients" },
    { to: "/groups", label: "Groups" },
    ...(user.is_superuser
      ? [
          { to: "/exports", label: "Bulk export" },
          { to: "/users", label: "Users" },
          { to: "/connected-apps", label: "Connected apps" },
        ]
      : []),
    { to: "/account", label: "My account" },
  ];
  return (
    <AppShell header={{ height: 60 }} navbar={{ width: 220, breakpoint: "sm", collapsed: { mobile: !opened } }} padding="md">
      <a href="#main" className="skip-link">
        Skip to content
      </a>
      <AppShell.Header>
        <Group h="100%" px="md" justify="space-between" wrap="nowrap">
          <Group wrap="nowrap">
            <Burger opened={opened} onClick={toggle} hiddenFrom="sm" size="sm" aria-label="Menu" />
            <Title order={2} size="h3">
              CareVault
            </Title>
          </Group>
          <Group wrap="nowrap" gap="sm">
            <Text size="sm" visibleFrom="xs" c="dimmed">
              <VisuallyHidden>Signed in as </VisuallyHidden>
              {user.email}
            </Text>
            <Button variant="default" size="xs" onClick={() => void logOut()}>
              Log out
            </Button>
          </Group>
        </Group>
      </AppShell.Header>
      <AppShell.Navbar p="xs" aria-label="Main">
        {links.map((link) => (
          <NavLink
            key={link.to}
            component={Link}
            to={link.to}
            label={link.label}
            active={location.pathname === link.to || location.pathname.startsWith(`${link.to}/`)}
            onClick={close}
          />
        ))}
      </AppShell.Navbar>
      <AppShell.Main id="main" tabIndex={-1}>
        {children}
      </AppShell.Main>
    </AppShell>
  );
}
