/**
 * Format-aware checks: every real fixture passes whatever the chunking, and
 * truncated, bit-flipped, spliced and hand-damaged copies get a precise
 * finding; folder layouts (DeepSpeed, Hugging Face Trainer, DCP) are built
 * from the fixtures in temporary folders.
 */

import assert from "node:assert/strict";
import { crc32, deflateRawSync } from "node:zlib";
import {
  checkFileFormat,
  detectLayout,
  type FormatChecker,
  formatCheckerFor,
  type LayoutFile,
  type LayoutResult,
  readLayoutContents,
  TorchZipChecker,
} from "../src/formats/mod.ts";
import { PickleWalker } from "../src/formats/pickle.ts";
import { ZipVerifier } from "../src/formats/zip.ts";
import { FIXTURES, tempDir } from "./_helpers.ts";

// ---------------------------------------------------------------------------
// Feeding checkers

/** A small seeded generator (mulberry32), so a failing chunking can be replayed. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Feeds `bytes` in random chunks of 1 byte to 1 MiB through one reused
 * buffer that is scribbled over after every call, as the hashing loop
 * reuses its read buffer: a checker that kept a view instead of a copy fails.
 */
function feed(checker: FormatChecker, bytes: Uint8Array, seed: number): void {
  const next = random(seed);
  const buffer = new Uint8Array(1024 * 1024);
  for (let at = 0; at < bytes.length;) {
    const band = next();
    const max = band < 0.4 ? 16 : band < 0.8 ? 4096 : 1024 * 1024;
    const n = Math.min(bytes.length - at, 1 + Math.floor(next() * max));
    buffer.set(bytes.subarray(at, at + n));
    checker.update(buffer.subarray(0, n));
    buffer.fill(0xa5, 0, n);
    at += n;
  }
}

interface Checked {
  format: string;
  details: string[];
  notes: readonly string[];
  facts: Readonly<Record<string, unknown>>;
}

function check(name: string, bytes: Uint8Array, seed = 1): Checked {
  const checker = formatCheckerFor(name, bytes.length);
  assert.ok(checker, `no checker for ${name}`);
  feed(checker, bytes, seed);
  const findings = checker.finish();
  return { format: checker.format, details: findings.map((f) => f.detail), notes: checker.notes, facts: checker.facts };
}

/** Asserts exactly the same findings whatever the chunking, and returns them joined. */
function findings(name: string, bytes: Uint8Array): string {
  const first = check(name, bytes, 1);
  for (const seed of [2, 3]) assert.deepEqual(check(name, bytes, seed).details, first.details);
  assert.ok(first.details.length > 0, `expected findings for ${name}`);
  return first.details.join("\n");
}

function fixture(path: string): Uint8Array {
  return Deno.readFileSync(`${FIXTURES}/${path}`);
}

const FIXTURE_FILES = [
  ...["fortran_tensor_3d.pth", "test.pt", "test_with_key.pt"].map((f) => [`torch-zip/${f}`, "torch-zip"]),
  ...["bool.bin", "linear_state.bin", "offset-strides.bin", "reshape.bin", "slice.bin", "strides.bin"]
    .map((f) => [`torch-legacy/${f}`, "torch-legacy"]),
  ...["B", "H", "I", "b", "d", "e", "f", "h", "i", "overall", "jfk-codes", "voices"]
    .map((f) => [`safetensors/${f}.safetensors`, "safetensors"]),
] as const;

Deno.test("every fixture passes its checker, whatever the chunking (1 byte to 1 MiB)", () => {
  const listed = new Set<string>();
  for (const dir of ["torch-zip", "torch-legacy", "safetensors"]) {
    for (const entry of Deno.readDirSync(`${FIXTURES}/${dir}`)) listed.add(`${dir}/${entry.name}`);
  }
  assert.deepEqual(new Set(FIXTURE_FILES.map(([path]) => path)), listed, "a fixture is not covered");
  for (const [path, format] of FIXTURE_FILES) {
    const bytes = fixture(path);
    for (let seed = 1; seed <= 12; seed++) {
      const result = check(path, bytes, seed);
      assert.equal(result.format, format, path);
      assert.deepEqual(result.details, [], `${path} (seed ${seed})`);
      assert.deepEqual(result.notes, [], path);
    }
    // Whole file in one chunk, and one byte at a time.
    const whole = formatCheckerFor(path, bytes.length)!;
    whole.update(bytes);
    assert.deepEqual(whole.finish(), [], path);
    const bytewise = formatCheckerFor(path, bytes.length)!;
    for (let i = 0; i < bytes.length; i++) bytewise.update(bytes.subarray(i, i + 1));
    assert.deepEqual(bytewise.finish(), [], path);
  }
});

Deno.test("checkFileFormat streams a file from disk; other extensions get no checker", async () => {
  const result = await checkFileFormat(`${FIXTURES}/torch-zip/fortran_tensor_3d.pth`);
  assert.equal(result?.format, "torch-zip");
  assert.deepEqual(result?.findings, []);
  assert.equal(await checkFileFormat(`${FIXTURES}/SOURCES.md`), undefined);
  assert.equal(formatCheckerFor("model.ckpt.index", 10), undefined);
  assert.equal(formatCheckerFor("config.json", 10), undefined);
  assert.equal(formatCheckerFor("MODEL.PT", 10)?.format, "torch");
  assert.equal(formatCheckerFor("a/b/lightning.ckpt", 10)?.format, "torch");
});

// ---------------------------------------------------------------------------
// A zip writer that writes like torch.save (caffe2's PyTorchStreamWriter on miniz)

interface ZipRecord {
  name: string;
  data: Uint8Array;
  /** 0 stored (default, as torch writes), 8 deflated; any other value is written as is with stored bytes. */
  method?: number;
}

const encoder = new TextEncoder();

/**
 * Local headers with sizes deferred to a data descriptor (flag bit 3),
 * an "FB" extra field padding each record's data to 64 bytes, then the
 * central directory, a zip64 end record and locator, and the end record.
 *
 * `zip64Offsets` writes every record as miniz writes those past 4 GiB: a
 * zip64 extra field with the header offset in the local header, a 24-byte
 * descriptor, and 0xffffffff plus a zip64 field for the offset in the
 * central directory.
 */
function torchZip(records: ZipRecord[], zip64Offsets = false): Uint8Array {
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  for (const record of records) {
    const name = encoder.encode(record.name);
    const method = record.method ?? 0;
    const stored = method === 8 ? new Uint8Array(deflateRawSync(record.data)) : record.data;
    const crc = crc32(record.data);
    const zip64 = zip64Offsets ? 12 : 0;
    const start = offset + 30 + name.length + zip64 + 4;
    const pad = (64 - (start % 64)) % 64;
    const local = new Uint8Array(30 + name.length + zip64 + 4 + pad);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(6, 0x0808, true);
    lv.setUint16(8, method, true);
    lv.setUint16(26, name.length, true);
    lv.setUint16(28, zip64 + 4 + pad, true);
    local.set(name, 30);
    if (zip64Offsets) {
      lv.setUint16(30 + name.length, 1, true);
      lv.setUint16(32 + name.length, 8, true);
      lv.setBigUint64(34 + name.length, BigInt(offset), true);
    }
    local.set([0x46, 0x42, pad & 0xff, pad >> 8], 30 + name.length + zip64);
    local.fill(0x5a, 30 + name.length + zip64 + 4);
    const descriptor = new Uint8Array(zip64Offsets ? 24 : 16);
    const dv = new DataView(descriptor.buffer);
    dv.setUint32(0, 0x08074b50, true);
    dv.setUint32(4, crc, true);
    if (zip64Offsets) {
      dv.setBigUint64(8, BigInt(stored.length), true);
      dv.setBigUint64(16, BigInt(record.data.length), true);
    } else {
      dv.setUint32(8, stored.length, true);
      dv.setUint32(12, record.data.length, true);
    }
    const entry = new Uint8Array(46 + name.length + zip64);
    const cv = new DataView(entry.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(8, 0x0808, true);
    cv.setUint16(10, method, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, stored.length, true);
    cv.setUint32(24, record.data.length, true);
    cv.setUint16(28, name.length, true);
    cv.setUint16(30, zip64, true);
    cv.setUint32(42, zip64Offsets ? 0xffffffff : offset, true);
    entry.set(name, 46);
    if (zip64Offsets) {
      cv.setUint16(46 + name.length, 1, true);
      cv.setUint16(48 + name.length, 8, true);
      cv.setBigUint64(50 + name.length, BigInt(offset), true);
    }
    parts.push(local, stored, descriptor);
    central.push(entry);
    offset += local.length + stored.length + descriptor.length;
  }
  const cdSize = central.reduce((sum, part) => sum + part.length, 0);
  const zip64Offset = offset + cdSize;
  const end = new Uint8Array(56 + 20 + 22);
  const ev = new DataView(end.buffer);
  ev.setUint32(0, 0x06064b50, true);
  ev.setBigUint64(4, 44n, true);
  ev.setUint16(12, 0x031e, true);
  ev.setUint16(14, 0x2d, true);
  ev.setBigUint64(24, BigInt(records.length), true);
  ev.setBigUint64(32, BigInt(records.length), true);
  ev.setBigUint64(40, BigInt(cdSize), true);
  ev.setBigUint64(48, BigInt(offset), true);
  ev.setUint32(56, 0x07064b50, true);
  ev.setBigUint64(64, BigInt(zip64Offset), true);
  ev.setUint32(72, 1, true);
  ev.setUint32(76, 0x06054b50, true);
  ev.setUint16(84, records.length, true);
  ev.setUint16(86, records.length, true);
  ev.setUint32(88, cdSize, true);
  ev.setUint32(92, offset, true);
  const out = new Uint8Array(zip64Offset + end.length);
  let at = 0;
  for (const part of [...parts, ...central, end]) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** The records of a torch zip, read with the verifier's own walk (checked against the fixtures first). */
function zipRecords(bytes: Uint8Array): ZipRecord[] {
  const zip = new ZipVerifier();
  zip.update(bytes);
  const report = zip.finish();
  assert.deepEqual(report.findings, []);
  const local = new Map(report.local.map((entry) => [entry.headerOffset, entry]));
  return (report.central ?? []).map((entry) => {
    const start = local.get(entry.headerOffset)!.dataOffset;
    return { name: entry.name, data: bytes.slice(start, start + entry.compressedSize) };
  });
}

/** Where things are in a torch zip, to cut and flip at meaningful places. */
function zipMap(bytes: Uint8Array) {
  const zip = new ZipVerifier();
  zip.update(bytes);
  const report = zip.finish();
  const entry = (suffix: string) => {
    const local = report.local.find((e) => e.name.endsWith(suffix))!;
    return { header: local.headerOffset, data: local.dataOffset, descriptor: local.descriptor!.offset };
  };
  const cd = report.central![0].recordOffset;
  return { entry, cd, size: bytes.length };
}

Deno.test("the test zip writer writes torch's bytes: test.pt rebuilt from its records is identical", () => {
  for (const name of ["test.pt", "fortran_tensor_3d.pth", "test_with_key.pt"]) {
    const original = fixture(`torch-zip/${name}`);
    assert.deepEqual(torchZip(zipRecords(original)), original, name);
  }
});

// ---------------------------------------------------------------------------
// torch zip: truncation, bit flips, splices

const PYTORCH_EOCD =
  /end of central directory record not found.*PyTorch fails to load it with "failed finding central directory"/;

Deno.test("torch zip truncated anywhere: no end record, and where the file ends", () => {
  const file = fixture("torch-zip/test.pt");
  const map = zipMap(file);
  const data0 = map.entry("data/0");
  const cases: [string, number, RegExp][] = [
    ["inside the end record", map.size - 5, /central directory starts at offset 760 but the file ends at offset 1160/],
    ["inside the zip64 locator", map.size - 30, /central directory starts at offset 760/],
    [
      "inside the central directory",
      map.cd + 10,
      /central directory starts at offset 760 but the file ends at offset 770/,
    ],
    [
      "at the central directory's start",
      map.cd,
      /ends at offset 760, right after entry 'test\/.data\/serialization_id'/,
    ],
    [
      "inside an entry's data",
      data0.data + 10,
      /entry 'test\/data\/0' \(local header at offset 342\) extends past the end of the file: its data starts at offset 448/,
    ],
    [
      "inside a data descriptor",
      data0.descriptor + 6,
      /ends at offset 518 inside the data descriptor of entry 'test\/data\/0' at offset 512, after its 64 data bytes/,
    ],
    ["at a local header boundary", data0.header, /ends at offset 342, right after entry 'test\/byteorder'/],
    ["inside a local header", data0.header + 20, /ends at offset 362 inside the record that starts at offset 342/],
  ];
  for (const [what, cut, where] of cases) {
    const details = findings("test.pt", file.subarray(0, cut));
    assert.match(details, PYTORCH_EOCD, what);
    assert.match(details, where, what);
  }
  assert.match(findings("test.pt", new Uint8Array(0)), /the file is empty; torch.load fails on it/);
});

Deno.test("torch zip: a damaged central directory record is that one finding, not the records it hides", () => {
  const file = fixture("torch-zip/test.pt");
  const map = zipMap(file);
  // The signature of the second record, then of the first (zeroed, as a lost block leaves it).
  for (const [record, at] of [[2, map.cd + 46 + "test/data.pkl".length], [1, map.cd]] as const) {
    const copy = file.slice();
    copy.fill(0, at, at + 4);
    const details = findings("test.pt", copy).split("\n").filter((d) => !d.startsWith(`offset ${map.cd}:`));
    assert.equal(details.length, 1, details.join("\n"));
    assert.match(
      details[0],
      new RegExp(
        `^central directory record ${record} of \\d+ at offset ${at} is damaged \\(found 00 00 00 00 .*\\): ` +
          `PyTorch fails to load the file with "invalid header or archive is corrupted"$`,
      ),
    );
  }
});

Deno.test("torch zip bit flips: CRC mismatch names the entry; header damage is a mismatch", () => {
  const file = fixture("torch-zip/test.pt");
  const map = zipMap(file);
  const flip = (at: number) => {
    const copy = file.slice();
    copy[at] ^= 0x10;
    return findings("test.pt", copy);
  };
  const data0 = map.entry("data/0");
  assert.match(
    flip(data0.data + 17),
    /^entry 'test\/data\/0' \(local header at offset 342\): CRC-32 of its data is [0-9a-f]{8} but the archive records 49b0b1a6: its data is corrupt \(torch.load does not check CRCs and would load it\)$/,
  );
  // data.pkl's bytes: the CRC names it (the pickle walk may add its own complaint).
  assert.match(
    flip(map.entry("data.pkl").data + 30),
    /entry 'test\/data.pkl' .*CRC-32 of its data is [0-9a-f]{8} but the archive records 59976a3e/,
  );
  // A name byte in the local header.
  assert.match(
    flip(data0.header + 31),
    /entry 'test\/data\/0' \(local header at offset 342\): its local header has name "tust\/data\/0", the central directory "test\/data\/0"/,
  );
  // The local header's signature.
  assert.match(
    flip(data0.header + 2),
    /offset 342: expected a local file header \(50 4b 03 04\) or the central directory, found 50 4b 13 04/,
  );
  // The compression method in the local header.
  assert.match(flip(data0.header + 8), /its local header has compression method 16, the central directory 0/);
  assert.match(
    flip(data0.header + 8),
    /uses compression method 16; PyTorch's zip reader \(miniz\) reads only stored \(0\) and deflated \(8\) entries/,
  );
  // The CRC in the data descriptor.
  assert.match(
    flip(data0.descriptor + 4),
    /entry 'test\/data\/0' .*its data descriptor has CRC-32 49b0b1b6, the central directory 49b0b1a6/,
  );
  // The central directory's CRC of data/0: data and descriptor agree, the directory does not.
  const cdCrc = map.cd + 2 * 46 + "test/data.pkl".length + "test/byteorder".length + 16;
  assert.match(
    flip(cdCrc),
    /entry 'test\/data\/0' .*CRC-32 of its data is 49b0b1a6 but the archive records 49b0b1b6 \(its data descriptor says 49b0b1a6\)/,
  );
  // The end record's central directory offset.
  assert.match(flip(map.size - 22 + 16), /end records say|disagree on the central directory's offset/);
});

Deno.test("torch zip splices: a storage record renamed or removed, sizes that disagree with data.pkl", () => {
  const file = fixture("torch-zip/test.pt");
  const records = zipRecords(file);
  // Rename data/0 to data/9 in both headers (the name is outside the CRC).
  const renamed = file.slice();
  const map = zipMap(file);
  const data0 = map.entry("data/0");
  renamed[data0.header + 30 + "test/data/".length] = "9".charCodeAt(0);
  const cdName = map.cd + 46 * 3 + "test/data.pkl".length + "test/byteorder".length + "test/data/".length;
  assert.equal(renamed[cdName], "0".charCodeAt(0));
  renamed[cdName] = "9".charCodeAt(0);
  assert.equal(
    findings("test.pt", renamed),
    "'test/data.pkl' references storage '0' (LongStorage of 8 elements (64 bytes)) but the archive has no record 'test/data/0'",
  );
  // Remove the record, rewriting the archive.
  const removed = torchZip(records.filter((r) => r.name !== "test/data/0"));
  assert.match(findings("test.pt", removed), /references storage '0' .* no record 'test\/data\/0'/);
  // A storage record of the wrong size.
  const short = torchZip(records.map((r) => r.name === "test/data/0" ? { ...r, data: r.data.subarray(0, 56) } : r));
  assert.equal(
    findings("test.pt", short),
    "record 'test/data/0' holds 56 bytes but 'test/data.pkl' describes it as LongStorage of 8 elements (64 bytes)",
  );
  // No version record; a version that is not a number; a bad byteorder.
  assert.match(
    findings("test.pt", torchZip(records.filter((r) => r.name !== "test/version"))),
    /no record 'test\/.data\/version' or 'test\/version'/,
  );
  const withRecord = (name: string, text: string) =>
    torchZip(records.map((r) => r.name === name ? { ...r, data: encoder.encode(text) } : r));
  assert.match(
    findings("test.pt", withRecord("test/version", "x\n")),
    /record 'test\/version' holds "x", not a version number/,
  );
  assert.match(findings("test.pt", withRecord("test/byteorder", "middle")), /holds "middle", not "little" or "big"/);
  // No data.pkl at all; records outside a folder.
  assert.match(
    findings("test.pt", torchZip(records.filter((r) => r.name !== "test/data.pkl"))),
    /no record 'test\/data.pkl': this is not a torch.save checkpoint/,
  );
  assert.match(
    findings("test.pt", torchZip(records.map((r) => ({ ...r, name: r.name.replace(/^test\//, "") })))),
    /first record 'data.pkl' is not in a folder/,
  );
  // data.pkl cut short (its CRC recomputed, so only the pickle walk can tell).
  const pkl = records.find((r) => r.name === "test/data.pkl")!;
  assert.match(
    findings("test.pt", torchZip(records.map((r) => r === pkl ? { ...r, data: r.data.subarray(0, 100) } : r))),
    /'test\/data.pkl' is not a valid pickle \(ends after 100 bytes.*before its STOP opcode\)/,
  );
  // Bytes written after the end record.
  const trailing = new Uint8Array(file.length + 3);
  trailing.set(file);
  assert.match(findings("test.pt", trailing), /3 bytes follow the end of central directory record at offset 1143/);
});

Deno.test("torch zip: zip64 fields as miniz writes them past 4 GiB (24-byte descriptors, 0xffffffff offsets)", () => {
  const records = zipRecords(fixture("torch-zip/test.pt"));
  const zip64 = torchZip(records, true);
  assert.deepEqual(check("test.pt", zip64).details, []);
  assert.deepEqual(zipRecords(zip64), records);
  const map = zipMap(zip64);
  const flipped = zip64.slice();
  flipped[map.entry("data/0").data + 5] ^= 0x01;
  assert.match(
    findings("test.pt", flipped),
    /entry 'test\/data\/0' .*CRC-32 of its data is [0-9a-f]{8} but the archive records 49b0b1a6/,
  );
  assert.match(
    findings("test.pt", zip64.subarray(0, map.entry("data/0").descriptor + 20)),
    /inside the data descriptor of entry 'test\/data\/0'/,
  );
});

Deno.test("torch zip saved with compute_crc32=False (every CRC 0) passes, with a note that CRCs were not recorded", () => {
  const file = fixture("torch-zip/test.pt");
  const zeroed = file.slice();
  const zip = new ZipVerifier();
  zip.update(file);
  const report = zip.finish();
  const view = new DataView(zeroed.buffer);
  for (const entry of report.local) view.setUint32(entry.descriptor!.offset + 4, 0, true);
  for (const entry of report.central!) view.setUint32(entry.recordOffset + 16, 0, true);
  const result = check("test.pt", zeroed);
  assert.deepEqual(result.details, []);
  assert.match(result.notes.join(), /5 entries record no CRC-32 \(0, as torch.save writes with compute_crc32=False\)/);
  // Zero in one place only is damage, not a choice.
  const one = file.slice();
  new DataView(one.buffer).setUint32(report.central![2].recordOffset + 16, 0, true);
  assert.match(
    findings("test.pt", one),
    /entry 'test\/data\/0' .*CRC-32 of its data is 49b0b1a6 but the archive records 00000000/,
  );
});

Deno.test("torch zip: deflated records are read and CRC-checked; other methods are findings", () => {
  const records = zipRecords(fixture("torch-zip/test.pt"));
  const deflated = torchZip(records.map((r) => ({ ...r, method: 8 })));
  assert.deepEqual(check("test.pt", deflated).details, []);
  const corrupt = deflated.slice();
  const map = zipMap(deflated);
  corrupt[map.entry("data/0").data + 3] ^= 0xff;
  assert.match(findings("test.pt", corrupt), /entry 'test\/data\/0'.*(deflated data is corrupt|CRC-32 of its data)/);
  const bzip2 = torchZip(records.map((r) => r.name === "test/data/0" ? { ...r, method: 12 } : r));
  assert.match(findings("test.pt", bzip2), /entry 'test\/data\/0' uses compression method 12/);
});

Deno.test("torch zip memory bounds: a central directory that does not fit is a note, not a guess", () => {
  const file = fixture("torch-zip/test.pt");
  // 200 bytes of tail hold the end records but not the 307-byte central directory; the capture is capped at 100.
  const checker = new TorchZipChecker({ tailBytes: 200, maxCentralDirectoryBytes: 100 });
  feed(checker, file, 7);
  assert.deepEqual(checker.finish(), []);
  assert.match(checker.notes.join("\n"), /the central directory \(307 bytes at offset 760\) was not kept in memory/);
  // A deflated record larger than the inflate buffer: its CRC is skipped with a note.
  const records = zipRecords(file);
  const deflated = torchZip(records.map((r) => ({ ...r, method: 8 })));
  const small = new TorchZipChecker({ maxInflateBytes: 32 });
  feed(small, deflated, 3);
  assert.deepEqual(small.finish(), []);
  assert.match(small.notes.join("\n"), /entry 'test\/data.pkl' .* its CRC was not checked/);
});

Deno.test("torch zip: DeepSpeed-style top-level scalars of data.pkl become facts", () => {
  const records = [
    {
      name: "archive/data.pkl",
      data: pickle((p) => p.dict([["dp_world_size", 4], ["mp_world_size", 1], ["ds_version", "0.14.0"]])),
    },
    { name: "archive/version", data: encoder.encode("3\n") },
  ];
  const result = check("mp_rank_00_model_states.pt", torchZip(records));
  assert.deepEqual(result.details, []);
  assert.deepEqual(result.facts, { dp_world_size: 4, mp_world_size: 1, ds_version: "0.14.0" });
});

// ---------------------------------------------------------------------------
// torch legacy

Deno.test("torch legacy: truncation, wrong counts, trailing bytes, wrong magic", () => {
  const file = fixture("torch-legacy/bool.bin");
  // bool.bin: magic 0–14, protocol 15–20, sys_info 21–136, main 137–399, keys 400–437,
  // storage '66275296' (count 438–445, 9 bools 446–454), storage '71854480' (count 455–462, 9 floats 463–498).
  const cases: [number, RegExp][] = [
    [8, /ends at offset 8 inside the magic number pickle that starts at offset 0: the file is truncated/],
    [18, /inside the protocol version pickle that starts at offset 15/],
    [300, /inside the main pickle that starts at offset 137/],
    [420, /inside the storage keys pickle that starts at offset 400/],
    [441, /inside storage '66275296' \(1 of 2, from offset 438\): 3 of the 8 bytes of its element count are present/],
    [450, /inside storage '66275296' \(1 of 2, from offset 438\): 4 of its 9 bytes are present/],
    [file.length - 1, /inside storage '71854480' \(2 of 2, from offset 455\): 35 of its 36 bytes are present/],
  ];
  for (const [cut, expected] of cases) {
    assert.match(findings("bool.bin", file.subarray(0, cut)), expected, `cut at ${cut}`);
  }
  const longer = new Uint8Array(file.length + 4);
  longer.set(file);
  assert.match(findings("bool.bin", longer), /4 bytes follow the last storage \(which ends at offset 499\)/);
  const count = file.slice();
  count[455] = 10;
  assert.match(
    findings("bool.bin", count),
    /storage '71854480' at offset 455 holds 10 elements but the main pickle describes FloatStorage of 9 .*storage has wrong size/,
  );
  const magic = file.slice();
  magic[5] ^= 1;
  assert.match(findings("model.pt", magic), /not torch's magic number 0x1950a86a20f9469cfc6c/);
  const version = file.slice();
  version[18] = 0xea;
  assert.match(findings("bool.bin", version), /protocol version pickle at offset 15 is 1002, not 1001/);
  const garbage = file.slice();
  garbage[200] = 0xff;
  assert.match(
    findings("bool.bin", garbage),
    /the main pickle at offset 137 is malformed: unknown opcode 0xff at offset 63/,
  );
});

Deno.test("torch legacy: the storage keys list must match the storages the object references", () => {
  const file = fixture("torch-legacy/reshape.bin");
  // reshape.bin's keys pickle starts at 389: PROTO, EMPTY_LIST, BINPUT, then 'X', a 4-byte length, '73143456'.
  const keysAt = 389 + 5;
  assert.equal(new TextDecoder().decode(file.subarray(keysAt + 5, keysAt + 13)), "73143456");
  const other = file.slice();
  other[keysAt + 12] = "7".charCodeAt(0);
  assert.match(
    findings("reshape.bin", other),
    /the storage keys list names '73143457', which the main pickle never references/,
  );
});

Deno.test("not torch files: strict extensions get a finding, .bin is left unchecked with a note", () => {
  const text = encoder.encode("hello, world\n");
  assert.match(
    findings("model.pt", text),
    /not a PyTorch checkpoint: it starts 68 65 6c 6c 6f 2c 20 77, while torch.save writes a zip archive/,
  );
  const bin = check("shard-0.bin", text);
  assert.deepEqual(bin.details, []);
  assert.equal(bin.format, "unrecognized");
  assert.match(bin.notes.join(), /not a torch file \(it starts 68 65 6c 6c 6f 2c 20 77\)/);
  // A plain pickle in a .bin: not torch's, so unchecked; in a .pt, a finding.
  const plain = pickle((p) => p.dict([["a", 1]]));
  const lenient = check("data.bin", plain);
  assert.deepEqual(lenient.details, []);
  assert.equal(lenient.format, "unrecognized");
  assert.match(findings("data.pt", plain), /the first pickle is <dict>, not torch's magic number/);
  assert.deepEqual(check("empty.bin", new Uint8Array(0)).details, []);
  // The tar format of the earliest releases is recognized, not flagged.
  const tar = new Uint8Array(1024);
  tar.set(encoder.encode("storages"), 0);
  tar.set(encoder.encode("ustar"), 257);
  const ancient = check("ancient.pt", tar);
  assert.equal(ancient.format, "torch-tar");
  assert.deepEqual(ancient.details, []);
  assert.match(ancient.notes.join(), /tar format of the earliest PyTorch releases/);
});

// ---------------------------------------------------------------------------
// safetensors

interface Tensor {
  dtype: string;
  shape: number[];
  data_offsets: number[];
}

/** A safetensors file with the given header object (padded with spaces as the reference writer does) and data. */
function safetensors(header: Record<string, unknown> | string, data: Uint8Array): Uint8Array {
  let text = typeof header === "string" ? header : JSON.stringify(header);
  text += " ".repeat((8 - (encoder.encode(text).length % 8)) % 8);
  const json = encoder.encode(text);
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

function readSafetensors(bytes: Uint8Array): { header: Record<string, Tensor>; data: Uint8Array } {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  return {
    header: JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))),
    data: bytes.subarray(8 + n),
  };
}

Deno.test("safetensors: damaged headers", () => {
  const file = fixture("safetensors/overall.safetensors");
  const big = file.slice();
  new DataView(big.buffer).setBigUint64(0, 1n << 40n, true);
  assert.match(
    findings("x.safetensors", big),
    /header length is 1099511627776 bytes, over the format's limit of 100000000/,
  );
  const past = file.slice();
  new DataView(past.buffer).setBigUint64(0, 10_000n, true);
  assert.match(
    findings("x.safetensors", past),
    /header length is 10000 bytes but the file has only 694 bytes after it/,
  );
  assert.match(
    findings("x.safetensors", file.subarray(0, 5)),
    /the file is 5 bytes, too short for the 8-byte header length/,
  );
  assert.match(
    findings("x.safetensors", file.subarray(0, 300)),
    /header length is 526 bytes but the file has only 292/,
  );
  const { header, data } = readSafetensors(file);
  assert.match(findings("x.safetensors", safetensors('{"a": [1,', data)), /the header is not valid JSON/);
  assert.match(findings("x.safetensors", safetensors("[1, 2]", data)), /does not start with '\{'/);
  assert.match(findings("x.safetensors", safetensors('{"x": 1, "y": [}', data)), /not valid JSON/);
  const utf8 = safetensors('{"xx": 1}', new Uint8Array(0));
  utf8[10] = 0xff;
  assert.match(findings("x.safetensors", utf8), /the header is not valid UTF-8/);
  assert.match(
    findings("x.safetensors", safetensors({ ...header, __metadata__: { test: 3 } }, data)),
    /__metadata__ entry 'test' is 3, not a string/,
  );
  assert.match(
    findings("x.safetensors", safetensors({ ...header, __metadata__: [] }, data)),
    /__metadata__ is not a map/,
  );
});

Deno.test("safetensors: tensor entries and the coverage of the data section", () => {
  const { header, data } = readSafetensors(fixture("safetensors/overall.safetensors"));
  const edit = (changes: Record<string, Partial<Tensor> | undefined>, bytes = data) => {
    const next: Record<string, unknown> = { ...header };
    for (const [name, change] of Object.entries(changes)) {
      if (change === undefined) delete next[name];
      else next[name] = { ...header[name], ...change };
    }
    return findings("x.safetensors", safetensors(next, bytes));
  };
  // overall: B U8 [0,6) H U16 [6,18) I U32 [18,42) b I8 [42,48) d F64 [48,96) e F16 [96,108) f F32 [108,132) …
  assert.match(
    edit({ d: { dtype: "F32" } }),
    /tensor 'd': data_offsets \[48, 96\] span 48 bytes but F32 \[6\] needs 24/,
  );
  assert.equal(edit({ d: { dtype: "F32" } }).split("\n").length, 1, "a wrong size is not also a gap");
  assert.match(edit({ d: { dtype: "Q8" } }), /tensor 'd': unknown dtype "Q8"/);
  assert.match(edit({ d: { shape: [-6] } }), /shape \[-6\] is not a list of non-negative integers/);
  assert.match(edit({ d: { shape: [2.5] } }), /shape \[2.5\]/);
  assert.match(edit({ d: { data_offsets: [96, 48] } }), /data_offsets \[96, 48\] end before they begin/);
  assert.match(edit({ d: { data_offsets: [48] } }), /data_offsets \[48\] is not a pair/);
  assert.match(
    edit({ e: { data_offsets: [90, 102] } }),
    /tensor 'e' \[90, 102\) overlaps tensor 'd' \[48, 96\)/,
  );
  assert.match(edit({ b: undefined }), /data bytes \[42, 48\) belong to no tensor \(gap between 'I' and 'd'\)/);
  assert.match(edit({ B: undefined }), /data bytes \[0, 6\) belong to no tensor \(before 'H'\)/);
  const longer = new Uint8Array(data.length + 5);
  longer.set(data);
  assert.match(
    edit({}, longer),
    /5 bytes after the last tensor \(the data section is 173 bytes, the tensors cover 168\)/,
  );
  assert.match(
    edit({}, data.subarray(0, 160)),
    /ends at data offset 168 but the data section has only 160 bytes: the file is truncated/,
  );
  assert.match(
    findings("x.safetensors", safetensors({ t: 3 }, new Uint8Array(0))),
    /tensor 't': its entry is not an object/,
  );
  // Sub-byte dtypes: 3 F4 values are 12 bits, not whole bytes; 4 are 2 bytes.
  assert.match(
    findings("x.safetensors", safetensors({ t: { dtype: "F4", shape: [3], data_offsets: [0, 2] } }, new Uint8Array(2))),
    /F4 \[3\] is 12 bits, not a whole number of bytes/,
  );
  assert.deepEqual(
    check("x.safetensors", safetensors({ t: { dtype: "F4", shape: [4], data_offsets: [0, 2] } }, new Uint8Array(2)))
      .details,
    [],
  );
  // A header wrong everywhere reports 100 findings and counts the rest.
  const broken = Object.fromEntries(
    Array.from({ length: 150 }, (_, i) => [`t${i}`, { dtype: "F32", shape: [1], data_offsets: [8 * i, 8 * i + 8] }]),
  );
  const capped = check("x.safetensors", safetensors(broken, new Uint8Array(1200))).details;
  assert.equal(capped.length, 101);
  assert.equal(capped[100], "50 more findings not listed");
  // No tensors at all is a valid (empty) file, as the reference writer makes it.
  assert.deepEqual(check("x.safetensors", safetensors({}, new Uint8Array(0))).details, []);
});

// ---------------------------------------------------------------------------
// Pickles for synthetic files: a protocol-2 writer with just what the tests need

type PickleInput = null | boolean | number | string | PickleInput[] | {
  global: [string, string];
  state: [string, PickleInput][];
};

class PickleBuilder {
  readonly bytes: number[] = [0x80, 2];
  op(...codes: number[]): this {
    this.bytes.push(...codes);
    return this;
  }
  value(value: PickleInput): this {
    if (value === null) return this.op(0x4e);
    if (value === true) return this.op(0x88);
    if (value === false) return this.op(0x89);
    if (typeof value === "number") {
      const b = new Uint8Array(4);
      new DataView(b.buffer).setInt32(0, value, true);
      return this.op(0x4a, ...b);
    }
    if (typeof value === "string") {
      const s = encoder.encode(value);
      const n = new Uint8Array(4);
      new DataView(n.buffer).setUint32(0, s.length, true);
      return this.op(0x58, ...n, ...s);
    }
    if (Array.isArray(value)) {
      this.op(0x5d, 0x28);
      for (const item of value) this.value(item);
      return this.op(0x65);
    }
    // A dataclass as pickle writes it: cls, (), NEWOBJ, state dict, BUILD.
    this.op(0x63, ...encoder.encode(`${value.global[0]}\n${value.global[1]}\n`), 0x29, 0x81);
    this.dict(value.state, false);
    return this.op(0x62);
  }
  dict(entries: [PickleInput, PickleInput][], stop = true): this {
    this.op(0x7d, 0x28);
    for (const [k, v] of entries) this.value(k).value(v);
    this.op(0x75);
    return stop ? this.op(0x2e) : this;
  }
}

function pickle(build: (p: PickleBuilder) => PickleBuilder): Uint8Array {
  return new Uint8Array(build(new PickleBuilder()).bytes);
}

Deno.test("pickle walker: limited walks still find the STOP; malformed pickles say where", () => {
  const bytes = pickle((p) => p.dict(Array.from({ length: 200 }, (_, i) => [`key-${i}`, i] as [string, number])));
  const limited = new PickleWalker({ maxRetainedBytes: 1000 });
  const tail = new Uint8Array([...bytes, 1, 2, 3]);
  assert.equal(limited.update(tail), bytes.length);
  assert.ok(limited.done && limited.limited && limited.value === undefined);
  const cut = new PickleWalker();
  cut.update(bytes.subarray(0, 50));
  cut.end();
  assert.match(cut.error ?? "", /ends after 50 bytes inside an opcode, before its STOP opcode/);
  const bad = new PickleWalker();
  bad.update(new Uint8Array([0x80, 2, 0x71, 0]));
  assert.match(bad.error ?? "", /stack underflow at offset 2/);
});

// ---------------------------------------------------------------------------
// Layouts, built in temporary folders from the fixtures

async function listFiles(dir: string, rel = ""): Promise<LayoutFile[]> {
  const out: LayoutFile[] = [];
  for await (const entry of Deno.readDir(rel ? `${dir}/${rel}` : dir)) {
    const path = rel ? `${rel}/${entry.name}` : entry.name;
    if (entry.isDirectory) out.push(...await listFiles(dir, path));
    else out.push({ path, size: (await Deno.stat(`${dir}/${path}`)).size });
  }
  return out.sort((a, b) => a.path.localeCompare(b.path));
}

async function write(dir: string, files: Record<string, Uint8Array | string>): Promise<void> {
  for (const [path, content] of Object.entries(files)) {
    const full = `${dir}/${path}`;
    await Deno.mkdir(full.slice(0, full.lastIndexOf("/")), { recursive: true });
    if (typeof content === "string") await Deno.writeTextFile(full, content);
    else await Deno.writeFile(full, content);
  }
}

/** Runs the layout check the way deep validation would: deep-check every file for facts, read the small files. */
async function layout(dir: string, rootName?: string): Promise<LayoutResult> {
  const files = await listFiles(dir);
  const facts = new Map<string, Readonly<Record<string, string | number | boolean>>>();
  for (const file of files) {
    const result = await checkFileFormat(`${dir}/${file.path}`, file.path);
    if (result) facts.set(file.path, result.facts);
  }
  return detectLayout({ files, contents: await readLayoutContents(dir, files), facts, rootName });
}

function paths(result: LayoutResult): string[] {
  return result.findings.map((f) => f.path).sort();
}

Deno.test("DeepSpeed: latest, model states per model-parallel rank, optimizer shards per data-parallel rank", async () => {
  await using tmp = await tempDir();
  const pt = fixture("torch-zip/test.pt");
  const step = "global_step100";
  await write(tmp.path, {
    latest: step,
    [`${step}/mp_rank_00_model_states.pt`]: pt,
    [`${step}/mp_rank_01_model_states.pt`]: pt,
    [`${step}/zero_pp_rank_0_mp_rank_00_optim_states.pt`]: pt,
    [`${step}/zero_pp_rank_1_mp_rank_00_optim_states.pt`]: pt,
    [`${step}/zero_pp_rank_0_mp_rank_01_optim_states.pt`]: pt,
    [`${step}/zero_pp_rank_1_mp_rank_01_optim_states.pt`]: pt,
  });
  const ok = await layout(tmp.path);
  assert.equal(ok.kind, "deepspeed");
  assert.deepEqual(ok.findings, []);
  assert.deepEqual(ok.layouts, [{ kind: "deepspeed", folder: "" }, { kind: "deepspeed", folder: step }]);

  // A rank's optimizer shard missing.
  await Deno.remove(`${tmp.path}/${step}/zero_pp_rank_0_mp_rank_01_optim_states.pt`);
  const missing = await layout(tmp.path);
  assert.deepEqual(paths(missing), [`${step}/zero_pp_rank_0_mp_rank_01_optim_states.pt`]);
  assert.match(missing.findings[0].detail, /no optimizer shard of data-parallel rank 0, model-parallel rank 1/);

  // A model-parallel rank's model states missing, and an empty shard.
  await write(tmp.path, { [`${step}/zero_pp_rank_0_mp_rank_01_optim_states.pt`]: new Uint8Array(0) });
  await Deno.remove(`${tmp.path}/${step}/mp_rank_01_model_states.pt`);
  const more = await layout(tmp.path);
  assert.deepEqual(paths(more), [
    `${step}/mp_rank_01_model_states.pt`,
    `${step}/zero_pp_rank_0_mp_rank_01_optim_states.pt`,
  ]);
  assert.match(more.findings.map((f) => f.detail).join("\n"), /no model states for model-parallel rank 1/);
  assert.match(more.findings.map((f) => f.detail).join("\n"), /the file is empty \(0 bytes\)/);

  // latest names a tag folder that is not there.
  await write(tmp.path, { latest: "global_step200\n" });
  const dangling = await layout(tmp.path);
  assert.ok(
    dangling.findings.some((f) =>
      f.path === "global_step200" && /latest names tag 'global_step200' but there is no folder/.test(f.detail)
    ),
  );
});

Deno.test("DeepSpeed: the world size the model states record catches the highest rank missing", async () => {
  await using tmp = await tempDir();
  const step = "global_step7";
  const modelStates = torchZip([
    { name: "archive/data.pkl", data: pickle((p) => p.dict([["dp_world_size", 3], ["mp_world_size", 1]])) },
    { name: "archive/version", data: encoder.encode("3\n") },
  ]);
  const pt = fixture("torch-zip/test.pt");
  await write(tmp.path, {
    latest: step,
    [`${step}/mp_rank_00_model_states.pt`]: modelStates,
    [`${step}/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt`]: pt,
    [`${step}/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt`]: pt,
  });
  const result = await layout(tmp.path);
  assert.deepEqual(paths(result), [`${step}/bf16_zero_pp_rank_2_mp_rank_00_optim_states.pt`]);
  assert.match(result.findings[0].detail, /expected 3 data-parallel ranks, dp_world_size 3/);
});

Deno.test("Hugging Face Trainer checkpoint-N: state, weights, shards, optimizer and RNG states", async () => {
  await using tmp = await tempDir();
  const dir = "checkpoint-500";
  const state = (step: number) => JSON.stringify({ global_step: step, epoch: 1.5, log_history: [] });
  await write(tmp.path, {
    [`${dir}/trainer_state.json`]: state(500),
    [`${dir}/config.json`]: "{}",
    [`${dir}/model.safetensors`]: fixture("safetensors/overall.safetensors"),
    [`${dir}/optimizer.pt`]: fixture("torch-zip/test.pt"),
    [`${dir}/scheduler.pt`]: fixture("torch-zip/test_with_key.pt"),
    [`${dir}/rng_state_0.pth`]: fixture("torch-zip/fortran_tensor_3d.pth"),
    [`${dir}/rng_state_1.pth`]: fixture("torch-zip/fortran_tensor_3d.pth"),
  });
  const ok = await layout(tmp.path);
  assert.equal(ok.kind, "hf-trainer");
  assert.deepEqual(ok.findings, []);

  await write(tmp.path, { [`${dir}/trainer_state.json`]: state(400) });
  const other = await layout(tmp.path);
  assert.deepEqual(paths(other), [`${dir}/trainer_state.json`]);
  assert.match(other.findings[0].detail, /global_step is 400 but the folder is checkpoint-500/);

  // The same folder checked in place: its name comes from the caller.
  const inPlace = await layout(`${tmp.path}/${dir}`, dir);
  assert.match(inPlace.findings[0].detail, /global_step is 400 but the folder is checkpoint-500/);

  await write(tmp.path, { [`${dir}/trainer_state.json`]: "{ not json" });
  assert.match((await layout(tmp.path)).findings[0].detail, /not valid JSON/);

  await Deno.remove(`${tmp.path}/${dir}/trainer_state.json`);
  await Deno.remove(`${tmp.path}/${dir}/scheduler.pt`);
  await Deno.remove(`${tmp.path}/${dir}/rng_state_0.pth`);
  const partial = await layout(tmp.path);
  assert.deepEqual(paths(partial), [`${dir}/rng_state_0.pth`, `${dir}/scheduler.pt`, `${dir}/trainer_state.json`]);
  assert.match(partial.findings.map((f) => f.detail).join("\n"), /Trainer writes it last, so this save did not finish/);
});

Deno.test("Hugging Face Trainer: the optimizer state and scheduler.pt, both or neither", async () => {
  await using tmp = await tempDir();
  const pt = fixture("torch-zip/test.pt");
  const base = {
    "trainer_state.json": JSON.stringify({ global_step: 7 }),
    "model.safetensors": fixture("safetensors/overall.safetensors"),
    "training_args.bin": pt,
  };
  const cases: [string, Record<string, Uint8Array | string>, string[]][] = [
    ["save_only_model: neither", {}, []],
    ["both", { "optimizer.pt": pt, "scheduler.pt": pt }, []],
    ["optimizer.pt alone", { "optimizer.pt": pt }, ["scheduler.pt"]],
    ["scheduler.pt alone", { "scheduler.pt": pt }, ["optimizer.pt"]],
    ["FSDP full state dict", { "optimizer.bin": pt, "scheduler.pt": pt }, []],
    ["FSDP sharded state dict", { "optimizer_0/__0_0.distcp": pt, "scheduler.pt": pt }, []],
    ["FSDP optimizer alone", { "optimizer.bin": pt }, ["scheduler.pt"]],
    ["XLA FSDP, per rank", { "rank0-of-2-optimizer.pt": pt, "rank1-of-2-optimizer.pt": pt, "scheduler.pt": pt }, []],
    ["DeepSpeed keeps the optimizer in global_step7/", {
      "scheduler.pt": pt,
      "latest": "global_step7",
      "global_step7/mp_rank_00_model_states.pt": pt,
      "global_step7/zero_pp_rank_0_mp_rank_00_optim_states.pt": pt,
    }, []],
  ];
  for (const [what, files, missing] of cases) {
    const dir = `${tmp.path}/${what.replace(/\W+/g, "-")}`;
    const named = Object.entries({ ...base, ...files }).map(([name, bytes]) => [`checkpoint-7/${name}`, bytes]);
    await write(dir, Object.fromEntries(named));
    const result = await layout(dir);
    // DCP's own check of optimizer_0/ (no .metadata there) is not what this test is about.
    const findings = result.findings.filter((f) => !f.path.includes("optimizer_0/"));
    assert.deepEqual(findings.map((f) => f.path), missing.map((name) => `checkpoint-7/${name}`), what);
    for (const finding of findings) {
      assert.match(finding.detail, /resumes neither without both \(it would silently restart the optimizer\)/, what);
    }
  }
});

Deno.test("Hugging Face Trainer: a sharded index naming a missing shard; no weights at all", async () => {
  await using tmp = await tempDir();
  const dir = "checkpoint-20";
  const shard = fixture("safetensors/jfk-codes.safetensors");
  const index = {
    metadata: { total_size: 2 * shard.length },
    weight_map: {
      "a.weight": "model-00001-of-00003.safetensors",
      "b.weight": "model-00002-of-00003.safetensors",
      "c.weight": "model-00003-of-00003.safetensors",
    },
  };
  await write(tmp.path, {
    [`${dir}/trainer_state.json`]: JSON.stringify({ global_step: 20 }),
    [`${dir}/model.safetensors.index.json`]: JSON.stringify(index),
    [`${dir}/model-00001-of-00003.safetensors`]: shard,
    [`${dir}/model-00003-of-00003.safetensors`]: shard,
  });
  const result = await layout(tmp.path);
  assert.deepEqual(paths(result), [`${dir}/model-00002-of-00003.safetensors`]);
  assert.match(
    result.findings[0].detail,
    /model.safetensors.index.json maps weights to 'model-00002-of-00003.safetensors', which is missing/,
  );

  await Deno.remove(`${tmp.path}/${dir}/model.safetensors.index.json`);
  const noIndex = await layout(tmp.path);
  assert.deepEqual(paths(noIndex), [`${dir}/model-00002-of-00003.safetensors`, `${dir}/model.safetensors.index.json`]);

  await Deno.remove(`${tmp.path}/${dir}/model-00001-of-00003.safetensors`);
  await Deno.remove(`${tmp.path}/${dir}/model-00003-of-00003.safetensors`);
  const none = await layout(tmp.path);
  assert.match(none.findings.map((f) => f.detail).join("\n"), /no model weights/);
});

/** A DCP `.metadata` as pickle writes it: Metadata(storage_data={MetadataIndex(...): _StorageInfo(...)}). */
function dcpMetadata(chunks: [string, string, number, number][]): Uint8Array {
  const module = "torch.distributed.checkpoint.metadata";
  const p = new PickleBuilder();
  p.op(0x63, ...encoder.encode(`${module}\nMetadata\n`), 0x29, 0x81, 0x7d, 0x28);
  p.value("state_dict_metadata").op(0x7d);
  p.value("planner_data").value(null);
  p.value("storage_data").op(0x7d, 0x28);
  for (const [fqn, file, offset, length] of chunks) {
    p.value({ global: [module, "MetadataIndex"], state: [["fqn", fqn], ["offset", [0]], ["index", 0]] });
    p.value({
      global: ["torch.distributed.checkpoint.filesystem", "_StorageInfo"],
      state: [["relative_path", file], ["offset", offset], ["length", length]],
    });
  }
  p.op(0x75, 0x75, 0x62, 0x2e);
  return new Uint8Array(p.bytes);
}

Deno.test("DCP: .metadata names every .distcp file; missing, empty or short files are findings", async () => {
  await using tmp = await tempDir();
  const dir = "pytorch_model_fsdp_0";
  const shard = fixture("safetensors/voices.safetensors");
  await write(tmp.path, {
    [`${dir}/.metadata`]: dcpMetadata([["w", "__0_0.distcp", 0, 1000], ["b", "__1_0.distcp", 500, 1500]]),
    [`${dir}/__0_0.distcp`]: shard.subarray(0, 1000),
    [`${dir}/__1_0.distcp`]: shard.subarray(0, 2000),
  });
  const ok = await layout(tmp.path);
  assert.equal(ok.kind, "dcp");
  assert.deepEqual(ok.findings, []);

  await write(tmp.path, { [`${dir}/__1_0.distcp`]: shard.subarray(0, 1999) });
  assert.match(
    (await layout(tmp.path)).findings[0].detail,
    /'__1_0.distcp' is 1999 bytes but .metadata places data up to offset 2000: the file is truncated/,
  );
  await Deno.remove(`${tmp.path}/${dir}/__1_0.distcp`);
  const missing = await layout(tmp.path);
  assert.deepEqual(paths(missing), [`${dir}/__1_0.distcp`]);
  assert.match(missing.findings[0].detail, /.metadata places data in '__1_0.distcp', which is missing/);

  await write(tmp.path, { [`${dir}/.metadata`]: new Uint8Array([0x80, 2, 0x7d, 0x28]) });
  assert.match((await layout(tmp.path)).findings[0].detail, /not a readable pickle \(ends after 4 bytes/);
  await Deno.remove(`${tmp.path}/${dir}/.metadata`);
  assert.match((await layout(tmp.path)).findings[0].detail, /no .metadata beside the .distcp files/);
});

Deno.test("DCP: a .metadata written by Python's pickle (protocol 4: frames, memo, STACK_GLOBAL)", () => {
  // pickle.dumps(Metadata(...), protocol=4) with the real module and class names, naming
  // __0_0.distcp [0, 1200) and __1_0.distcp [0, 40).
  const metadata = Uint8Array.from(
    atob(
      "gASVagEAAAAAAACMJXRvcmNoLmRpc3RyaWJ1dGVkLmNoZWNrcG9pbnQubWV0YWRhdGGUjAhNZXRhZGF0YZSTlCmBlH2UKIwTc3RhdGVfZGljdF9tZXRh" +
        "ZGF0YZR9lIwBd5SMAXiUc4wMcGxhbm5lcl9kYXRhlE6MDHN0b3JhZ2VfZGF0YZR9lChoAIwNTWV0YWRhdGFJbmRleJSTlCmBlH2UKIwDZnFulGgH" +
        "jAZvZmZzZXSUSwCFlIwFaW5kZXiUSwB1YowndG9yY2guZGlzdHJpYnV0ZWQuY2hlY2twb2ludC5maWxlc3lzdGVtlIwMX1N0b3JhZ2VJbmZvlJOU" +
        "KYGUfZQojA1yZWxhdGl2ZV9wYXRolIwMX18wXzAuZGlzdGNwlGgRSwCMBmxlbmd0aJRNsAR1YmgNKYGUfZQoaBCMAWKUaBFoEmgTSwB1YmgWKYGU" +
        "fZQoaBmMDF9fMV8wLmRpc3RjcJRoEUsAaBtLKHVidXViLg==",
    ),
    (c) => c.charCodeAt(0),
  );
  const files = [
    { path: ".metadata", size: metadata.length },
    { path: "__0_0.distcp", size: 1200 },
    { path: "__1_0.distcp", size: 39 },
  ];
  const result = detectLayout({ files, contents: new Map([[".metadata", metadata]]) });
  assert.equal(result.kind, "dcp");
  assert.deepEqual(result.findings, [{
    path: "__1_0.distcp",
    detail: "'__1_0.distcp' is 39 bytes but .metadata places data up to offset 40: the file is truncated",
  }]);
});

Deno.test("layouts: nested Trainer + DeepSpeed, plain folders, and files too large to read are notes", async () => {
  await using tmp = await tempDir();
  const pt = fixture("torch-zip/test.pt");
  await write(tmp.path, {
    "checkpoint-8/trainer_state.json": JSON.stringify({ global_step: 8 }),
    "checkpoint-8/latest": "global_step8",
    "checkpoint-8/global_step8/mp_rank_00_model_states.pt": pt,
    "checkpoint-8/global_step8/zero_pp_rank_0_mp_rank_00_optim_states.pt": pt,
    "checkpoint-8/scheduler.pt": pt,
    "checkpoint-8/rng_state.pth": pt,
  });
  const nested = await layout(tmp.path);
  assert.deepEqual(nested.findings, []);
  assert.equal(nested.kind, "hf-trainer");
  assert.deepEqual(nested.layouts.map((l) => `${l.kind}:${l.folder}`), [
    "hf-trainer:checkpoint-8",
    "deepspeed:checkpoint-8",
    "deepspeed:checkpoint-8/global_step8",
  ]);
  const plain = detectLayout({ files: [{ path: "shard-0.bin", size: 10 }, { path: "notes/a.txt", size: 3 }] });
  // Files and folders that only share a name with the frameworks' are not layouts: no findings.
  const lookalikes = detectLayout({
    files: [
      { path: "latest", size: 3 },
      { path: "ckpt/.metadata", size: 5 },
      { path: "checkpoint-3/model.pt", size: 1165 },
    ],
    contents: new Map([["latest", encoder.encode("v2\n")], ["ckpt/.metadata", encoder.encode("hello")]]),
  });
  assert.deepEqual(lookalikes, { kind: "plain", layouts: [], findings: [], notes: [] });
  assert.deepEqual(plain, { kind: "plain", layouts: [], findings: [], notes: [] });
  // trainer_state.json not handed over (too large or unreadable): a note, not a finding.
  const unread = detectLayout({
    files: [{ path: "checkpoint-1/trainer_state.json", size: 1e9 }, {
      path: "checkpoint-1/model.safetensors",
      size: 8,
    }],
  });
  assert.deepEqual(unread.findings, []);
  assert.match(unread.notes.join(), /checkpoint-1\/trainer_state.json was not read/);
});
