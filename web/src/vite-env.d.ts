/// <reference types="vite/client" />

interface ImportMetaEnv {
  /** The API's origin (https://...execute-api...); empty or unset: the console's own origin. */
  readonly VITE_API_URL?: string;
}
