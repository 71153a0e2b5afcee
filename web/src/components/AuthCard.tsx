import type { ReactNode } from "react";
import { Container, Paper, Title } from "@mantine/core";

/** The frame of the pages used before signing in. */
export function AuthCard({ title, children }: { title: string; children: ReactNode }) {
  return (
    <Container size={420} my={60} component="main">
      <Title order={1} ta="center" mb="xs">
        CareVault
      </Title>
      <Paper withBorder shadow="sm" p="lg" radius="md">
        <Title order={2} size="h3" mb="md">
          {title}
        </Title>
        {children}
      </Paper>
    </Container>
  );
}
