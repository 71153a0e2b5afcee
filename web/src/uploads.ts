// Uploads straight from the browser to S3: the API makes the attachment and a presigned PUT
// (signed over the file's type and size), the browser sends the bytes to that URL with exactly
// the headers the API returned, and the API confirms the object is there. This module keeps the
// state of each file (a pure reducer, unit-tested) and does the transfer.
import { storageErrorMessage } from "./api/errors";

export type UploadPhase = "preparing" | "uploading" | "confirming" | "uploaded" | "failed";

export interface Upload {
  /** This upload's own key (a file may be chosen twice). */
  key: string;
  fileName: string;
  size: number;
  phase: UploadPhase;
  /** Bytes sent over size, 0 to 1; never goes back. */
  progress: number;
  attachmentId?: string;
  error?: string;
}

export type UploadAction =
  | { type: "added"; key: string; fileName: string; size: number }
  | { type: "created"; key: string; attachmentId: string }
  | { type: "progress"; key: string; loaded: number; total: number }
  | { type: "sent"; key: string }
  | { type: "confirmed"; key: string }
  | { type: "failed"; key: string; error: string }
  | { type: "dismissed"; key: string };

const finished = (phase: UploadPhase) => phase === "uploaded" || phase === "failed";

// Which phase each step may follow: a late or repeated event cannot move a file backwards or
// revive a finished one.
const allowedFrom: Record<Exclude<UploadAction["type"], "added" | "dismissed" | "failed">, UploadPhase[]> = {
  created: ["preparing"],
  progress: ["uploading"],
  sent: ["uploading"],
  confirmed: ["confirming"],
};

export function uploadsReducer(uploads: Upload[], action: UploadAction): Upload[] {
  if (action.type === "added") {
    if (uploads.some((upload) => upload.key === action.key)) return uploads;
    return [...uploads, { key: action.key, fileName: action.fileName, size: action.size, phase: "preparing", progress: 0 }];
  }
  if (action.type === "dismissed") {
    return uploads.filter((upload) => upload.key !== action.key || !finished(upload.phase));
  }
  return uploads.map((upload) => {
    if (upload.key !== action.key) return upload;
    if (action.type === "failed") {
      return finished(upload.phase) ? upload : { ...upload, phase: "failed", error: action.error };
    }
    if (!allowedFrom[action.type].includes(upload.phase)) return upload;
    switch (action.type) {
      case "created":
        return { ...upload, phase: "uploading", attachmentId: action.attachmentId };
      case "progress": {
        const total = action.total > 0 ? action.total : upload.size;
        const fraction = total > 0 ? Math.min(1, Math.max(0, action.loaded / total)) : 0;
        return fraction > upload.progress ? { ...upload, progress: fraction } : upload;
      }
      case "sent":
        return { ...upload, phase: "confirming", progress: 1 };
      case "confirmed":
        return { ...upload, phase: "uploaded", progress: 1 };
    }
  });
}

export function isActive(upload: Upload): boolean {
  return !finished(upload.phase);
}

// Browsers often leave File.type empty for clinical formats; the API defaults to
// application/octet-stream, which S3 then serves as a download.
const typesByExtension: Record<string, string> = {
  pdf: "application/pdf",
  dcm: "application/dicom",
  dicom: "application/dicom",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  png: "image/png",
  txt: "text/plain",
  csv: "text/csv",
  json: "application/json",
  vcf: "text/x-vcard",
  gz: "application/gzip",
  zip: "application/zip",
};

/** The MIME type to declare for a file: the browser's, else one known by extension. */
export function mimeTypeOf(fileName: string, browserType: string): string {
  if (browserType && /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$/.test(browserType)) return browserType;
  const extension = fileName.includes(".") ? fileName.split(".").pop()!.toLowerCase() : "";
  return typesByExtension[extension] ?? "application/octet-stream";
}

// Headers a browser sets itself and refuses to be given (it sends the same values).
const browserOwnedHeaders = new Set(["content-length", "host"]);

/**
 * PUTs the file to the presigned URL with the returned headers, reporting progress. XHR, because
 * fetch reports no upload progress. Resolves when storage accepted the bytes.
 */
export function sendToStorage(
  url: string,
  method: string,
  headers: Record<string, string>,
  file: Blob,
  onProgress: (loaded: number, total: number) => void,
  signal?: AbortSignal,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open(method, url);
    for (const [name, value] of Object.entries(headers)) {
      if (!browserOwnedHeaders.has(name.toLowerCase())) request.setRequestHeader(name, value);
    }
    request.upload.onprogress = (event) => onProgress(event.loaded, event.lengthComputable ? event.total : file.size);
    request.onload = () => {
      if (request.status >= 200 && request.status < 300) resolve();
      else reject(new Error(storageErrorMessage(request.status, request.responseText ?? "")));
    };
    request.onerror = () => reject(new Error(storageErrorMessage(0, "")));
    request.onabort = () => reject(new Error("The upload was cancelled."));
    signal?.addEventListener("abort", () => request.abort());
    request.send(file);
  });
}
