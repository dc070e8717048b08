/**
 * The check of a PyTorch zip checkpoint (`torch.save` since 1.6, Lightning
 * `.ckpt`, TorchScript archives): the zip itself must be intact (see
 * {@linkcode ZipVerifier}), and it must hold what `torch.load` reads — every
 * record in one `<archive>/` folder, `<archive>/data.pkl`, a numeric
 * `<archive>/.data/version` or `<archive>/version`, and for every storage
 * that data.pkl references a `<archive>/data/<key>` record of exactly
 * numel × element size bytes.
 *
 * data.pkl is walked as it streams past (never buffered whole); its walk
 * keeps at most 64 MiB of rebuilt values (see {@linkcode PickleWalker}),
 * past which its storage references are noted as unchecked. When the
 * archive's end records cannot be read (a truncated file), only the zip
 * findings are reported: listing records "missing" past the cut would bury
 * the one finding that matters.
 *
 * Compressed entries: torch's writer stores every record (method 0), but
 * its reader (miniz) also reads deflated ones, so deflated entries are
 * accepted and their CRC checked when they inflate within 16 MiB; any other
 * method is a finding, as torch cannot read it.
 *
 * @module
 */

import { capFindings, type FormatChecker, type FormatFact, type FormatFinding } from "./checker.ts";
import { GrowableBytes } from "./bytes.ts";
import { PickleWalker } from "./pickle.ts";
import { storageRefs, topLevelFacts } from "./torch_pickle.ts";
import { type CentralEntry, type EntrySink, type LocalEntry, ZipVerifier, type ZipVerifierOptions } from "./zip.ts";

/** Small records whose content is checked. */
const SMALL_RECORDS = new Set(["version", ".data/version", "byteorder"]);
const MAX_SMALL_RECORD = 64;

/**
 * Checks a PyTorch zip checkpoint fed front to back.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { TorchZipChecker } from "./torch_zip.ts";
 * const file = await Deno.readFile(new URL("../../tests/fixtures/torch-zip/test.pt", import.meta.url));
 * const checker = new TorchZipChecker();
 * checker.update(file);
 * assert.deepEqual(checker.finish(), []);
 * // Cut inside the central directory, as a full disk does:
 * const cut = new TorchZipChecker();
 * cut.update(file.subarray(0, file.length - 100));
 * assert.match(cut.finish().map((f) => f.detail).join("\n"), /end of central directory record not found/);
 * ```
 */
export class TorchZipChecker implements FormatChecker {
  /** Always `torch-zip`. */
  readonly format = "torch-zip";
  readonly #zip: ZipVerifier;
  #archive: string | undefined;
  #pickle: PickleWalker | undefined;
  #pickleName: string | undefined;
  #pickleTrailing = 0;
  readonly #small = new Map<string, GrowableBytes>();
  #notes: string[] = [];
  #facts: Record<string, FormatFact> = {};

  /** A checker for one file; zip buffer limits can be lowered for tests. */
  constructor(options: Omit<ZipVerifierOptions, "onEntry"> = {}) {
    this.#zip = new ZipVerifier({ ...options, onEntry: (entry) => this.#sinkFor(entry) });
  }

  /** What could not be checked (complete after `finish`). */
  get notes(): readonly string[] {
    return this.#notes;
  }

  /** Scalar top-level entries of data.pkl's dict (complete after `finish`). */
  get facts(): Readonly<Record<string, FormatFact>> {
    return this.#facts;
  }

  /** Feeds the next bytes. */
  update(chunk: Uint8Array): void {
    this.#zip.update(chunk);
  }

  /** Ends the input and returns the findings. */
  finish(): FormatFinding[] {
    const report = this.#zip.finish();
    const findings = [...report.findings];
    this.#notes = [...report.notes];
    // Without a readable central directory, torch.load stops at once; listing
    // records "missing" past a truncation or a damaged record would only bury
    // the real finding.
    if (report.central === undefined || report.centralComplete === false) return capFindings(findings);
    findings.push(...this.#checkRecords(report.central, report.local));
    return capFindings(findings);
  }

  #sinkFor(entry: LocalEntry): EntrySink | undefined {
    if (this.#archive === undefined) {
      const slash = entry.name.indexOf("/");
      this.#archive = slash > 0 ? entry.name.slice(0, slash) : "";
    }
    const prefix = `${this.#archive}/`;
    if (!entry.name.startsWith(prefix)) return undefined;
    const record = entry.name.slice(prefix.length);
    if (record === "data.pkl" && this.#pickle === undefined) {
      const walker = new PickleWalker();
      this.#pickle = walker;
      this.#pickleName = entry.name;
      return (chunk) => {
        const used = walker.done || walker.error ? 0 : walker.update(chunk);
        if (walker.done) this.#pickleTrailing += chunk.length - used;
      };
    }
    if (SMALL_RECORDS.has(record) && !this.#small.has(record)) {
      const buffer = new GrowableBytes(MAX_SMALL_RECORD);
      this.#small.set(record, buffer);
      return (chunk) => void buffer.append(chunk.subarray(0, MAX_SMALL_RECORD - buffer.length));
    }
    return undefined;
  }

  #checkRecords(central: CentralEntry[], local: readonly LocalEntry[]): FormatFinding[] {
    const findings: FormatFinding[] = [];
    const first = central[0];
    if (!first) {
      return [{ detail: "the archive holds no records; torch.load fails with 'archive does not contain any files'" }];
    }
    const slash = first.name.indexOf("/");
    if (slash <= 0) {
      return [{
        offset: first.headerOffset,
        detail: `the first record '${first.name}' is not in a folder; torch.load needs every record under ` +
          `'<archive>/' and fails with 'file in archive is not in a subdirectory'`,
      }];
    }
    const archive = first.name.slice(0, slash);
    const byName = new Map(central.map((entry) => [entry.name, entry]));
    const pkl = `${archive}/data.pkl`;
    if (!byName.has(pkl)) {
      findings.push({
        detail: `no record '${pkl}': this is not a torch.save checkpoint (torch.load reads the object from data.pkl)`,
      });
    }
    const versionRecord = byName.has(`${archive}/.data/version`) ? ".data/version" : "version";
    if (!byName.has(`${archive}/${versionRecord}`)) {
      findings.push({
        detail:
          `no record '${archive}/.data/version' or '${archive}/version': torch.load cannot tell the format version`,
      });
    } else if (this.#archive === archive) {
      const text = decode(this.#small.get(versionRecord));
      if (text !== undefined && !/^\s*\d+\s*$/.test(text)) {
        findings.push({
          offset: byName.get(`${archive}/${versionRecord}`)?.headerOffset,
          detail: `record '${archive}/${versionRecord}' holds ${JSON.stringify(text)}, not a version number`,
        });
      }
    }
    const byteorder = decode(this.#small.get("byteorder"));
    if (byteorder !== undefined && this.#archive === archive && byteorder !== "little" && byteorder !== "big") {
      findings.push({
        offset: byName.get(`${archive}/byteorder`)?.headerOffset,
        detail: `record '${archive}/byteorder' holds ${JSON.stringify(byteorder)}, not "little" or "big"`,
      });
    }
    findings.push(...this.#checkPickle(pkl, byName, local));
    return findings;
  }

  #checkPickle(pkl: string, byName: Map<string, CentralEntry>, local: readonly LocalEntry[]): FormatFinding[] {
    const walker = this.#pickle;
    const entry = byName.get(pkl);
    if (!walker || !entry || this.#pickleName !== pkl) return [];
    // Only a walk that saw exactly the bytes the central directory gives data.pkl says anything about it.
    const walked = local.find((e) => e.name === pkl && e.headerOffset === entry.headerOffset);
    if (walked?.dataLength !== entry.compressedSize) return [];
    // Data never handed over (a deflated data.pkl too large to inflate here) was not walked.
    if (walked.computedCrc === undefined) {
      this.#notes.push(`'${pkl}' could not be read here: its storage references were not checked`);
      return [];
    }
    walker.end();
    const findings: FormatFinding[] = [];
    if (walker.error !== undefined) {
      findings.push({
        offset: entry.headerOffset,
        detail: `'${pkl}' is not a valid pickle (${walker.error})`,
      });
      return findings;
    }
    if (this.#pickleTrailing > 0) {
      findings.push({
        offset: entry.headerOffset,
        detail: `'${pkl}' has ${this.#pickleTrailing} bytes after the pickle's STOP opcode`,
      });
    }
    if (walker.limited) {
      this.#notes.push(`'${pkl}' builds more values than the walk keeps: its storage references were not checked`);
      return findings;
    }
    this.#facts = topLevelFacts(walker.value);
    const { refs, problems } = storageRefs(walker.persistentIds);
    for (const problem of problems) findings.push({ offset: entry.headerOffset, detail: `'${pkl}': ${problem}` });
    const archive = pkl.slice(0, -"/data.pkl".length);
    for (const ref of refs) {
      const name = `${archive}/data/${ref.key}`;
      const record = byName.get(name);
      const what = `${ref.type} of ${ref.numel} elements` +
        (ref.elementSize === undefined ? "" : ` (${ref.numel * ref.elementSize} bytes)`);
      if (!record) {
        findings.push({
          detail: `'${pkl}' references storage '${ref.key}' (${what}) but the archive has no record '${name}'`,
        });
        continue;
      }
      if (ref.elementSize !== undefined && record.uncompressedSize !== ref.numel * ref.elementSize) {
        findings.push({
          offset: record.headerOffset,
          detail: `record '${name}' holds ${record.uncompressedSize} bytes but '${pkl}' describes it as ${what}`,
        });
      }
    }
    return findings;
  }
}

function decode(buffer: GrowableBytes | undefined): string | undefined {
  if (!buffer) return undefined;
  return new TextDecoder("utf-8").decode(buffer.view()).replace(/\n$/, "");
}
