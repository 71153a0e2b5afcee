import "@mantine/core/styles.css";
import "@mantine/dropzone/styles.css";
import "@mantine/notifications/styles.css";
import "./styles.css";
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { MantineProvider, Modal, NavLink, Notification, createTheme, type CSSVariablesResolver, type MantineColorsTuple } from "@mantine/core";
import { Notifications } from "@mantine/notifications";
import { RouterProvider } from "react-router";
import { router } from "./routes";

// Contrast at WCAG AA (4.5:1) for every text, and "dimmed" text one step darker than Mantine's
// default gray.
// Mantine's teal with its two darkest shades darkened: the filled color (9) and its hover (8)
// both keep white text above 4.5:1.
const brand: MantineColorsTuple = ["#e6fcf5", "#c3fae8", "#96f2d7", "#63e6be", "#38d9a9", "#20c997", "#12b886", "#0ca678", "#087f5b", "#066649"];
const theme = createTheme({
  colors: { brand },
  primaryColor: "brand",
  primaryShade: { light: 9, dark: 7 },
  defaultRadius: "sm",
  components: {
    // Mantine's close buttons are icons: give them a name screen readers can say.
    Modal: Modal.extend({ defaultProps: { closeButtonProps: { "aria-label": "Close" } } }),
    Notification: Notification.extend({ defaultProps: { closeButtonProps: { "aria-label": "Dismiss" } } }),
    // The light variant's pale tint behind colored text falls short of 4.5:1.
    NavLink: NavLink.extend({ defaultProps: { variant: "filled" } }),
  },
});
const cssVariablesResolver: CSSVariablesResolver = () => ({
  variables: {},
  light: { "--mantine-color-dimmed": "var(--mantine-color-gray-7)" },
  dark: {},
});

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <MantineProvider theme={theme} defaultColorScheme="light" cssVariablesResolver={cssVariablesResolver}>
      <Notifications position="top-right" />
      <RouterProvider router={router} />
    </MantineProvider>
  </StrictMode>,
);
