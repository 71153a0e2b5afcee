// Large files go up in parts (S3 multipart, through the API's presigned part URLs): several
// parts in flight, each part's SHA-256 computed here (Web Crypto) and signed into its URL so
// storage refuses any other bytes, and resumable: the API says which parts arrived, so a
// paused, failed or reloaded upload sends only the rest. Interrupted uploads are remembered in
// localStorage (file name, size, modification time: never its content) to be resumed when the
// same file is chosen again.
import { api, call } from "./api/client";
import { partRange, partsInFlightFor, sendToStorage, sha256Base64, type PartPlan } from "./uploads";

/** Parts in flight at once unless the user chose otherwise (a setting of the upload panel). */
export const DEFAULT_PARTS_IN_FLIGHT = 4;
const PARTS_IN_FLIGHT_KEY = "carevault.upload.partsInFlight";
const RETRIES_PER_PART = 3;

export function partsInFlightSetting(): number {
  const stored = Number(localStorage.getItem(PARTS_IN_FLIGHT_KEY));
  return Number.isInteger(stored) && stored >= 1 && stored <= 16 ? stored : DEFAULT_PARTS_IN_FLIGHT;
}

export function setPartsInFlight(count: number): void {
  localStorage.setItem(PARTS_IN_FLIGHT_KEY, String(count));
}

export interface PartsProgress {
  /** Bytes stored or in flight. */
  sent: number;
  total: number;
  partsDone: number;
  partCount: number;
}

/**
 * Sends the parts the upload still lacks, then completes it. Resolves with the uploaded
 * attachment; rejects on abort (pause, cancel) or when a part fails after retries, leaving the
 * parts that arrived for the next try.
 */
export async function uploadParts(
  attachmentId: string,
  file: Blob,
  partsInFlight: number,
  onProgress: (progress: PartsProgress) => void,
  signal: AbortSignal,
) {
  const path = { attachment_id: attachmentId };
  const held = await call(api.GET("/api/v1/attachments/{attachment_id}/upload-parts", { params: { path }, signal }));
  const plan: PartPlan = { size: held.size, partSize: held.part_size, partCount: held.part_count };
  if (file.size !== plan.size) throw new Error("This is not the file this upload started with (its size differs).");
  const queue = [...held.missing_part_numbers];
  let stored = held.uploaded_bytes;
  let partsDone = plan.partCount - queue.length;
  const inFlight = new Map<number, number>();
  const report = () => {
    let sending = 0;
    for (const loaded of inFlight.values()) sending += loaded;
    onProgress({ sent: stored + sending, total: plan.size, partsDone, partCount: plan.partCount });
  };
  report();

  async function sendPart(number: number) {
    const [start, end] = partRange(plan, number);
    const part = file.slice(start, end);
    // The digest needs the part's bytes; the upload then streams the slice from disk again, so
    // only hashing holds a part in memory.
    const digest = await sha256Base64(await part.arrayBuffer());
    for (let attempt = 1; ; attempt += 1) {
      signal.throwIfAborted();
      try {
        // A fresh URL per attempt: URLs are short-lived, an upload may run for days.
        const urls = await call(
          api.POST("/api/v1/attachments/{attachment_id}/upload-parts", {
            params: { path },
            body: { part_numbers: [number], sha256: [digest] },
            signal,
          }),
        );
        const url = urls.parts[0];
        await sendToStorage(url.url, url.method, url.headers, part, (loaded) => {
          inFlight.set(number, loaded);
          report();
        }, signal);
        return;
      } catch (caught) {
        inFlight.delete(number);
        if (signal.aborted || attempt >= RETRIES_PER_PART) throw caught;
        await new Promise((resolve) => setTimeout(resolve, 500 * 2 ** attempt));
      }
    }
  }

  async function worker() {
    for (let number = queue.shift(); number !== undefined; number = queue.shift()) {
      await sendPart(number);
      inFlight.delete(number);
      const [start, end] = partRange(plan, number);
      stored += end - start;
      partsDone += 1;
      report();
    }
  }

  const workers = Array.from({ length: partsInFlightFor(plan, partsInFlight) }, worker);
  await Promise.all(workers);
  return call(api.POST("/api/v1/attachments/{attachment_id}/complete", { params: { path }, signal }));
}

/** What is remembered of an interrupted upload, to resume it when its file is chosen again. */
export interface Interrupted {
  attachmentId: string;
  patientId: string;
  fileName: string;
  size: number;
  lastModified: number;
}

const INTERRUPTED_PREFIX = "carevault.upload.interrupted.";

export function rememberInterrupted(upload: Interrupted): void {
  localStorage.setItem(INTERRUPTED_PREFIX + upload.attachmentId, JSON.stringify(upload));
}

export function forgetInterrupted(attachmentId: string): void {
  localStorage.removeItem(INTERRUPTED_PREFIX + attachmentId);
}

export function interruptedOf(patientId: string): Interrupted[] {
  const found: Interrupted[] = [];
  for (let i = 0; i < localStorage.length; i += 1) {
    const key = localStorage.key(i);
    if (!key?.startsWith(INTERRUPTED_PREFIX)) continue;
    try {
      const upload = JSON.parse(localStorage.getItem(key) ?? "") as Interrupted;
      if (upload.patientId === patientId) found.push(upload);
    } catch {
      localStorage.removeItem(key);
    }
  }
  return found;
}

/** The interrupted upload `file` continues, if it is the same file (name, size, modification time). */
export function interruptedFor(patientId: string, file: File): Interrupted | undefined {
  return interruptedOf(patientId).find(
    (upload) => upload.fileName === file.name && upload.size === file.size && upload.lastModified === file.lastModified,
  );
}
