import { describe, expect, it } from "vitest";
import { errorDetail, storageErrorMessage } from "./errors";

describe("errorDetail", () => {
  it("shows the API's detail text as it is", () => {
    expect(errorDetail(400, { detail: "Incorrect email or password" })).toBe("Incorrect email or password");
    expect(errorDetail(412, { detail: "The patient was changed since it was read" })).toBe("The patient was changed since it was read");
  });

  it("names each invalid field of a 422, without FastAPI's location prefix", () => {
    const body = {
      detail: [
        { loc: ["body", "name"], msg: "String should have at least 1 character", type: "string_too_short" },
        { loc: ["query", "dob_from"], msg: "Input should be a valid date", type: "date_from_datetime_parsing" },
      ],
    };
    expect(errorDetail(422, body)).toBe("name: String should have at least 1 character; dob_from: Input should be a valid date");
  });

  it("keeps a field path deeper than one level and a message with no location", () => {
    expect(errorDetail(422, { detail: [{ loc: ["body", "contact", 0], msg: "bad" }, { msg: "whole body is wrong" }] })).toBe(
      "contact.0: bad; whole body is wrong",
    );
  });

  it("falls back to the status's meaning when the body has no usable detail", () => {
    expect(errorDetail(503, null)).toMatch(/temporarily unavailable/);
    expect(errorDetail(502, "<html>Bad gateway</html>")).toMatch(/error 502/);
    expect(errorDetail(404, { detail: "" })).toBe("Not found.");
    expect(errorDetail(422, { detail: [{ loc: ["body"], msg: 42 }] })).toBe("The request failed (error 422).");
    expect(errorDetail(0, undefined)).toMatch(/could not be reached/);
    expect(errorDetail(412, {})).toMatch(/changed by someone else/);
  });
});

describe("storageErrorMessage", () => {
  it("shows S3's own message", () => {
    const xml = '<?xml version="1.0"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>';
    expect(storageErrorMessage(403, xml)).toBe("Storage refused the upload (403): Request has expired");
  });

  it("uses the code when there is no message, and explains a network failure", () => {
    expect(storageErrorMessage(403, "<Error><Code>SignatureDoesNotMatch</Code></Error>")).toBe(
      "Storage refused the upload (403): SignatureDoesNotMatch",
    );
    expect(storageErrorMessage(0, "")).toMatch(/could not reach storage/);
    expect(storageErrorMessage(500, "")).toBe("Storage refused the upload (error 500).");
  });
});
