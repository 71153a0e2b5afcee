// Uploads straight from the browser to S3: the API makes the attachment and a presigned PUT
// (signed over the file's type and size), the browser sends the bytes to that URL with exactly
// the headers the API returned, and the API confirms the object is there. Large files go in
// parts (multipart.ts). This module keeps the state of each file (a pure reducer, unit-tested)
// and does the transfer of one request.
import { storageErrorMessage } from "./api/errors";

export type UploadPhase = "preparing" | "uploading" | "paused" | "confirming" | "uploaded" | "failed";

export interface Upload {
  /** This upload's own key (a file may be chosen twice). */
  key: string;
  fileName: string;
  size: number;
  phase: UploadPhase;
  /** Bytes sent over size, 0 to 1; never goes back. */
  progress: number;
  attachmentId?: string;
  /** Multipart uploads: parts stored of all parts. */
  parts?: { done: number; count: number };
  /** Recent throughput while uploading, for the time left. */
  bytesPerSecond?: number;
  error?: string;
}

export type UploadAction =
  | { type: "added"; key: string; fileName: string; size: number }
  | { type: "created"; key: string; attachmentId: string }
  | { type: "progress"; key: string; loaded: number; total: number; parts?: { done: number; count: number }; bytesPerSecond?: number }
  | { type: "paused"; key: string; error?: string }
  | { type: "resumed"; key: string }
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
  paused: ["uploading", "preparing"],
  resumed: ["paused"],
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
        return {
          ...upload,
          progress: Math.max(fraction, upload.progress),
          parts: action.parts ?? upload.parts,
          bytesPerSecond: action.bytesPerSecond ?? upload.bytesPerSecond,
        };
      }
      case "paused":
        return { ...upload, phase: "paused", bytesPerSecond: undefined, error: action.error };
      case "resumed":
        return { ...upload, phase: "uploading", error: undefined };
      case "sent":
        return { ...upload, phase: "confirming", progress: 1, bytesPerSecond: undefined };
      case "confirmed":
        return { ...upload, phase: "uploaded", progress: 1 };
    }
  });
}

export function isActive(upload: Upload): boolean {
  return !finished(upload.phase);
}

/** Seconds until done at the current throughput; undefined when it cannot be told. */
export function secondsLeft(upload: Upload): number | undefined {
  if (upload.phase !== "uploading" || !upload.bytesPerSecond) return undefined;
  return Math.ceil(((1 - upload.progress) * upload.size) / upload.bytesPerSecond);
}

/**
 * Throughput over a sliding window of (time ms, bytes sent) samples: steady enough to show,
 * quick to follow a change of network.
 */
export class Throughput {
  private samples: [number, number][] = [];
  constructor(private windowMs = 5000) {}
  add(at: number, sent: number): number | undefined {
    this.samples.push([at, sent]);
    while (this.samples.length > 2 && at - this.samples[0][0] > this.windowMs) this.samples.shift();
    const [firstAt, firstSent] = this.samples[0];
    const elapsed = (at - firstAt) / 1000;
    return elapsed >= 0.5 && sent > firstSent ? (sent - firstSent) / elapsed : undefined;
  }
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

/** Memory a tab may hold for hashing parts at once: each part in flight is read whole. */
const HASHING_BUDGET_BYTES = 1024 * 1024 * 1024;

export interface PartPlan {
  size: number;
  partSize: number;
  partCount: number;
}

/** Byte range [start, end) of part `number` (1-based). */
export function partRange(plan: PartPlan, number: number): [number, number] {
  const start = (number - 1) * plan.partSize;
  return [start, Math.min(plan.size, start + plan.partSize)];
}

/** How many parts to keep in flight: the setting, within the hashing memory budget. */
export function partsInFlightFor(plan: PartPlan, wanted: number): number {
  const byMemory = Math.max(1, Math.floor(HASHING_BUDGET_BYTES / Math.max(1, plan.partSize)));
  return Math.max(1, Math.min(wanted, byMemory, plan.partCount));
}

/** Base64 SHA-256, as S3's x-amz-checksum-sha256 takes it. */
export async function sha256Base64(data: BufferSource): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  let binary = "";
  for (const byte of digest) binary += String.fromCharCode(byte);
  return btoa(binary);
}
