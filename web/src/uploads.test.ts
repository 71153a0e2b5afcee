import { describe, expect, it } from "vitest";
import { mimeTypeOf, secondsLeft, Throughput, uploadsReducer, type Upload, type UploadAction } from "./uploads";

const run = (actions: UploadAction[], start: Upload[] = []) => actions.reduce(uploadsReducer, start);
const added: UploadAction = { type: "added", key: "a", fileName: "scan.pdf", size: 1000 };

describe("uploadsReducer", () => {
  it("walks a file through preparing, uploading, confirming and uploaded", () => {
    let state = run([added]);
    expect(state[0]).toMatchObject({ phase: "preparing", progress: 0 });
    state = run([{ type: "created", key: "a", attachmentId: "id-1" }], state);
    expect(state[0]).toMatchObject({ phase: "uploading", attachmentId: "id-1" });
    state = run([{ type: "progress", key: "a", loaded: 250, total: 1000 }], state);
    expect(state[0].progress).toBe(0.25);
    state = run([{ type: "sent", key: "a" }], state);
    expect(state[0]).toMatchObject({ phase: "confirming", progress: 1 });
    state = run([{ type: "confirmed", key: "a" }], state);
    expect(state[0]).toMatchObject({ phase: "uploaded", progress: 1 });
  });

  it("never moves progress backwards and clamps it to 0..1", () => {
    const state = run([
      added,
      { type: "created", key: "a", attachmentId: "id" },
      { type: "progress", key: "a", loaded: 600, total: 1000 },
      { type: "progress", key: "a", loaded: 300, total: 1000 },
    ]);
    expect(state[0].progress).toBe(0.6);
    expect(run([{ type: "progress", key: "a", loaded: 5000, total: 1000 }], state)[0].progress).toBe(1);
    expect(run([{ type: "progress", key: "a", loaded: -5, total: 1000 }], state)[0].progress).toBe(0.6);
  });

  it("uses the file's size when the browser reports no total", () => {
    const state = run([added, { type: "created", key: "a", attachmentId: "id" }, { type: "progress", key: "a", loaded: 500, total: 0 }]);
    expect(state[0].progress).toBe(0.5);
  });

  it("keeps a failure with its message and progress, and ignores late events after it", () => {
    const state = run([
      added,
      { type: "created", key: "a", attachmentId: "id" },
      { type: "progress", key: "a", loaded: 400, total: 1000 },
      { type: "failed", key: "a", error: "Storage refused the upload (403): Request has expired" },
      { type: "progress", key: "a", loaded: 900, total: 1000 },
      { type: "sent", key: "a" },
      { type: "confirmed", key: "a" },
    ]);
    expect(state[0]).toMatchObject({ phase: "failed", progress: 0.4, error: "Storage refused the upload (403): Request has expired" });
  });

  it("does not let a failure overwrite a finished upload, nor skip steps", () => {
    const done = run([added, { type: "created", key: "a", attachmentId: "id" }, { type: "sent", key: "a" }, { type: "confirmed", key: "a" }]);
    expect(run([{ type: "failed", key: "a", error: "late" }], done)[0].phase).toBe("uploaded");
    // Confirmed before anything was sent: ignored.
    expect(run([added, { type: "confirmed", key: "a" }])[0].phase).toBe("preparing");
  });

  it("tracks files independently, adds a key once, and dismisses only finished files", () => {
    const other: UploadAction = { type: "added", key: "b", fileName: "notes.txt", size: 10 };
    let state = run([added, other, added, { type: "failed", key: "b", error: "x" }]);
    expect(state.map((u) => u.key)).toEqual(["a", "b"]);
    expect(state[0].phase).toBe("preparing");
    state = run([{ type: "dismissed", key: "a" }, { type: "dismissed", key: "b" }], state);
    expect(state.map((u) => u.key)).toEqual(["a"]);
  });
});

describe("mimeTypeOf", () => {
  it("prefers the browser's type, else the extension, else octet-stream", () => {
    expect(mimeTypeOf("report.pdf", "application/pdf")).toBe("application/pdf");
    expect(mimeTypeOf("scan.DCM", "")).toBe("application/dicom");
    expect(mimeTypeOf("reads.fastq", "")).toBe("application/octet-stream");
    expect(mimeTypeOf("README", "")).toBe("application/octet-stream");
    expect(mimeTypeOf("x.png", "not a type")).toBe("image/png");
  });
});

describe("pausing and resuming a multipart upload", () => {
  const uploading = run([added, { type: "created", key: "a", attachmentId: "id" }]);

  it("keeps progress and parts across a pause, and clears the rate", () => {
    let state = run([{ type: "progress", key: "a", loaded: 400, total: 1000, parts: { done: 2, count: 5 }, bytesPerSecond: 100 }], uploading);
    expect(state[0]).toMatchObject({ progress: 0.4, parts: { done: 2, count: 5 }, bytesPerSecond: 100 });
    expect(secondsLeft(state[0])).toBe(6);
    state = run([{ type: "paused", key: "a", error: "Network down." }], state);
    expect(state[0]).toMatchObject({ phase: "paused", progress: 0.4, parts: { done: 2, count: 5 }, error: "Network down." });
    expect(secondsLeft(state[0])).toBeUndefined();
    // Progress does not move while paused; a late event is ignored.
    expect(run([{ type: "progress", key: "a", loaded: 900, total: 1000 }], state)[0].progress).toBe(0.4);
    state = run([{ type: "resumed", key: "a" }], state);
    expect(state[0]).toMatchObject({ phase: "uploading", progress: 0.4, error: undefined });
  });

  it("cannot resume what is not paused nor pause what is finished", () => {
    expect(run([{ type: "resumed", key: "a" }], uploading)[0].phase).toBe("uploading");
    const done = run([{ type: "sent", key: "a" }, { type: "confirmed", key: "a" }], uploading);
    expect(run([{ type: "paused", key: "a" }], done)[0].phase).toBe("uploaded");
  });
});

describe("Throughput", () => {
  it("measures over a sliding window and says nothing before half a second", () => {
    const throughput = new Throughput(5000);
    expect(throughput.add(0, 0)).toBeUndefined();
    expect(throughput.add(200, 1000)).toBeUndefined();
    expect(throughput.add(1000, 10_000)).toBe(10_000);
    // Old samples leave the window: the rate follows the recent speed.
    throughput.add(6000, 20_000);
    expect(throughput.add(11_000, 120_000)).toBe(20_000);
  });
});
