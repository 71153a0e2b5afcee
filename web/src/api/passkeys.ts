// Passkeys in the browser by SimpleWebAuthn: the API's WebAuthn options ({"publicKey": ...},
// base64url fields) into navigator.credentials, and the credential back as JSON the API reads.
import { startAuthentication, startRegistration } from "@simplewebauthn/browser";
import { api, call } from "./client";

type Options = { publicKey?: unknown };

/** A new passkey made by the browser's authenticator for the API's creation options. */
export async function createPasskey(options: Options): Promise<unknown> {
  return startRegistration({ optionsJSON: options.publicKey as never });
}

/** The sign-in step's assertion: options from the API, signed by the user's passkey. */
export async function signWithPasskey(mfaToken: string): Promise<unknown> {
  const options = (await call(api.POST("/api/v1/login/mfa/passkey-options", { body: { mfa_token: mfaToken } }))) as Options;
  return startAuthentication({ optionsJSON: options.publicKey as never });
}
