import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { partRange, partsInFlightFor, sha256Base64 } from "./uploads";

const MIB = 1024 * 1024;

describe("parts of a file", () => {
  const plan = { size: 20 * MIB + 5, partSize: 8 * MIB, partCount: 3 };

  it("cuts full parts and a short last one, covering every byte once", () => {
    expect(partRange(plan, 1)).toEqual([0, 8 * MIB]);
    expect(partRange(plan, 2)).toEqual([8 * MIB, 16 * MIB]);
    expect(partRange(plan, 3)).toEqual([16 * MIB, 20 * MIB + 5]);
  });

  it("keeps the parts in flight within the setting, the parts and the memory for hashing", () => {
    expect(partsInFlightFor(plan, 4)).toBe(3);
    expect(partsInFlightFor({ ...plan, partCount: 100 }, 4)).toBe(4);
    // 525 MiB parts (a 5 TB file): at most what fits in 1 GiB of hashing.
    expect(partsInFlightFor({ size: 5 * 2 ** 40, partSize: 525 * MIB, partCount: 9987 }, 8)).toBe(1);
    expect(partsInFlightFor({ size: 10 * 2 ** 30, partSize: 256 * MIB, partCount: 40 }, 8)).toBe(4);
    expect(partsInFlightFor(plan, 0)).toBe(1);
  });
});

describe("sha256Base64", () => {
  it("is S3's x-amz-checksum-sha256 of the bytes", async () => {
    const bytes = new TextEncoder().encode("a part of a genome");
    expect(await sha256Base64(bytes)).toBe(createHash("sha256").update(bytes).digest("base64"));
  });
});
