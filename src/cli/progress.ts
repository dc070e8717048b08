/**
 * Progress on stderr for long work: bytes done, rate, ETA and the current
 * checkpoint, redrawn in place a few times a second. Only when stderr is a
 * terminal and the output is not `--json`; silent otherwise, so logs and
 * pipes stay clean.
 *
 * @module
 */

import type { CommandContext } from "./context.ts";
import { formatBytes, formatSeconds } from "./format.ts";

/** The callbacks a library call reports progress to. */
export interface ProgressHooks {
  /** Bytes read since the last call. */
  onProgress?: (bytes: number) => void;
  /** A checkpoint or folder is about to be read, with its size. */
  onPlan?: (plan: { path: string; bytes: number }) => void;
}

/** A progress display; `done()` clears its line. */
export interface Progress extends ProgressHooks {
  /** Clears the progress line. */
  done(): void;
}

const REDRAW_MS = 250;

/** Starts a progress display for `ctx`, or a silent one when it must not show. */
export function startProgress(ctx: CommandContext, verb: string): Progress {
  if (ctx.json || !ctx.io.stderrIsTerminal?.()) return { done() {} };
  const started = performance.now();
  let planned = 0;
  let done = 0;
  let current = "";
  let lastDraw = 0;
  let drawn = false;
  const draw = (force = false) => {
    const now = performance.now();
    if (!force && now - lastDraw < REDRAW_MS) return;
    lastDraw = now;
    const seconds = (now - started) / 1000;
    const rate = seconds > 0 ? done / seconds : 0;
    const eta = rate > 0 && planned > done ? ` ETA ${formatSeconds((planned - done) / rate)}` : "";
    const line = `${verb} ${formatBytes(done)}/${formatBytes(planned)} at ${formatBytes(rate)}/s${eta}  ${current}`;
    ctx.io.stderr(`\r\x1b[2K${line.slice(0, 160)}`);
    drawn = true;
  };
  return {
    onPlan: ({ path, bytes }) => {
      planned += bytes;
      current = path;
      draw(true);
    },
    onProgress: (bytes) => {
      done += bytes;
      draw();
    },
    done: () => {
      if (drawn) ctx.io.stderr("\r\x1b[2K");
    },
  };
}
