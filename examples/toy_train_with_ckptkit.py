#!/usr/bin/env python3
"""A toy training loop that checkpoints through ckptkit (Python standard library only).

    python3 examples/toy_train_with_ckptkit.py --root /tmp/ckpts --steps 5 [--save-every 1]
        [--ckptkit CMD] [--job-id ID] [--run-id ID] [--sleep S]

It shows the integration a real training script needs, without torch:

1. At start-up, ask `ckptkit resume ROOT --json` which checkpoint to load.
   Exit 3 means the root never held a checkpoint: start at step 0. Exit 1 means
   checkpoints exist but none is valid: stop (exit 1) rather than silently start over.
2. Train. The "model" is 8 head weights (kept in state.json) and a 2048-entry
   float64 embedding (kept in weights.bin, 16 KiB), updated by a deterministic
   rule, so two runs that train to the same step hold bit-identical weights.
3. Every --save-every steps (and at the last step) write the state into a
   fresh staging folder inside the root, fsync it, and run
   `ckptkit commit STAGING --root ROOT --step N`, which seals it with a
   sha256 manifest and renames it to ROOT/step-N atomically.

Kill it at any instant (SIGKILL to its process group, as a scheduler does)
and run it again: it resumes from the last committed checkpoint and ends with
the same weights as a run that was never interrupted. A staging folder left
by the killed run is never reused (each save gets a unique name);
`ckptkit gc` removes it once it is stale.

The ckptkit command is, in order: --ckptkit CMD, the CKPTKIT environment
variable, `ckptkit` on PATH, or this checkout's cli.ts run with deno.
"""

import argparse
import array
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

HEAD_SIZE = 8          # weights kept in state.json
EMBEDDING_SIZE = 2048  # float64 values kept in weights.bin (16 KiB)

# The permissions the compiled ckptkit binary has (see the README's Quickstart).
DENO_FLAGS = ["--allow-read", "--allow-write", "--allow-env", "--allow-sys", "--allow-net"]


def find_ckptkit(explicit):
    """The ckptkit command line as a list: --ckptkit, $CKPTKIT, PATH, or the checkout."""
    for command in (explicit, os.environ.get("CKPTKIT")):
        if command:
            return shlex.split(command)
    on_path = shutil.which("ckptkit")
    if on_path:
        return [on_path]
    cli = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "cli.ts")
    deno = shutil.which("deno")
    if deno and os.path.isfile(cli):
        return [deno, "run", "--quiet", *DENO_FLAGS, os.path.normpath(cli)]
    sys.exit("toy_train: cannot find ckptkit: pass --ckptkit, set CKPTKIT, or put ckptkit on PATH")


# --- the model: deterministic, so an interrupted run can be checked against an uninterrupted one ---


def initial_model():
    """Weights at step 0."""
    head = [0.1 * (i + 1) for i in range(HEAD_SIZE)]
    embedding = array.array("d", (((j * 37) % 101) / 101 for j in range(EMBEDDING_SIZE)))
    return head, embedding


def train_step(head, embedding, step):
    """One toy update (step counts from 1); returns a toy loss."""
    for i in range(HEAD_SIZE):
        head[i] = head[i] * 0.9 + step * 0.001 * (i + 1)
    for j in range(EMBEDDING_SIZE):
        embedding[j] = embedding[j] * 0.99 + ((step + j) % 13) * 1e-4
    return sum(abs(w) for w in head) / HEAD_SIZE


def embedding_bytes(embedding):
    """The embedding as little-endian float64 bytes, whatever the machine's byte order."""
    data = array.array("d", embedding)
    if sys.byteorder == "big":
        data.byteswap()
    return data.tobytes()


def weights_digest(head, embedding):
    """sha256 of every weight as little-endian float64: equal digests mean bit-identical weights."""
    data = array.array("d", head)
    if sys.byteorder == "big":
        data.byteswap()
    return hashlib.sha256(data.tobytes() + embedding_bytes(embedding)).hexdigest()


# --- talking to ckptkit ---


def resume(ckptkit, root):
    """(checkpoint path, step) to resume from, or (None, 0) on a first start (exit 3).

    Exits 1 when checkpoints exist but none is valid: a person decides, not the loop.
    """
    run = subprocess.run([*ckptkit, "resume", root, "--json", "--log-level", "warn"],
                         capture_output=True, text=True)
    if run.returncode == 3:
        return None, 0
    if run.returncode == 1:
        message = json.loads(run.stdout).get("message")
        print(f"toy_train: {message} in {root}; not starting from scratch", file=sys.stderr)
        sys.exit(1)
    if run.returncode != 0:
        sys.exit(f"toy_train: ckptkit resume failed (exit {run.returncode}): {run.stderr.strip()}")
    decision = json.loads(run.stdout)
    if decision.get("fallback"):
        print(f"note: resuming from an older checkpoint: {decision.get('fallback_reason')}", flush=True)
    return decision["chosen"]["path"], decision["chosen"]["step"]


def load(path, step):
    """Reads the weights a checkpoint holds, checking they are the step ckptkit said."""
    with open(os.path.join(path, "state.json"), encoding="utf-8") as f:
        state = json.load(f)
    if state["step"] != step or len(state["weights"]) != HEAD_SIZE:
        sys.exit(f"toy_train: {path}/state.json does not hold step {step}")
    embedding = array.array("d")
    with open(os.path.join(path, "weights.bin"), "rb") as f:
        embedding.frombytes(f.read())
    if sys.byteorder == "big":
        embedding.byteswap()
    if len(embedding) != EMBEDDING_SIZE:
        sys.exit(f"toy_train: {path}/weights.bin does not hold {EMBEDDING_SIZE} weights")
    return [float(w) for w in state["weights"]], embedding


def write_durably(path, data):
    """Writes a new file and fsyncs it, so the commit hashes what is really on disk."""
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path):
    """Fsyncs a folder, so the entries just created in it survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(ckptkit, root, step, head, embedding, job_id, run_id):
    """Writes a staging folder inside the root and commits it as step-N; returns what happened."""
    existing = os.path.join(root, f"step-{step}")
    quarantined = False
    if os.path.isdir(existing):
        # An earlier attempt committed this step but was killed before `latest`
        # moved to it, so resume chose the step before. A committed checkpoint
        # is never replaced: keep it when it validates (this toy training is
        # deterministic, so it holds these very weights; in real training it is
        # a sound checkpoint of the earlier attempt), else quarantine it.
        check = subprocess.run([*ckptkit, "validate", existing, "--log-level", "warn"], capture_output=True, text=True)
        if check.returncode == 0:
            return "kept, committed by an earlier attempt"
        if check.returncode != 1:  # 1: problems found; anything else: ckptkit could not tell
            sys.exit(f"toy_train: ckptkit validate {existing} failed (exit {check.returncode}): {check.stderr.strip()}")
        subprocess.run([*ckptkit, "quarantine", existing, "--log-level", "warn"], check=True, capture_output=True)
        quarantined = True
    # Inside the root, so the final rename never crosses file systems; unique,
    # so a staging folder left by a killed attempt is never written into.
    staging = os.path.join(root, f".staging-step-{step}-{os.getpid()}-{time.time_ns()}")
    os.mkdir(staging)
    state = {"step": step, "weights": head, "embedding": {"file": "weights.bin", "dtype": "float64-le",
                                                          "count": EMBEDDING_SIZE}}
    write_durably(os.path.join(staging, "state.json"), (json.dumps(state, indent=1) + "\n").encode())
    write_durably(os.path.join(staging, "weights.bin"), embedding_bytes(embedding))
    fsync_dir(staging)
    command = [*ckptkit, "commit", staging, "--root", root, "--step", str(step),
               "--json", "--log-level", "warn", "--metadata", f"loss={sum(abs(w) for w in head) / HEAD_SIZE:.6f}"]
    if job_id:
        command += ["--job-id", job_id]
    if run_id:
        command += ["--run-id", run_id]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode == 0:
        return f"committed step-{step}" + (", the earlier one quarantined" if quarantined else "")
    try:
        reason = json.loads(run.stdout)["error"]["reason"]
    except (ValueError, KeyError, TypeError):
        reason = None
    if reason == "checkpoint_exists":
        # Another process (an orphaned commit of a killed attempt) got there first.
        shutil.rmtree(staging, ignore_errors=True)
        return "kept, committed by an earlier attempt"
    # The staging folder stays for inspection; `ckptkit gc` removes it later.
    sys.exit(f"toy_train: ckptkit commit of step {step} failed (exit {run.returncode}): {run.stderr.strip()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="checkpoint root (created when missing)")
    parser.add_argument("--steps", type=int, required=True, help="train until this step")
    parser.add_argument("--save-every", type=int, default=1, help="commit a checkpoint every N steps (and at the end)")
    parser.add_argument("--ckptkit", help="the ckptkit command line (default: $CKPTKIT, PATH, or this checkout)")
    parser.add_argument("--job-id", default="toy-train", help="recorded in each manifest")
    parser.add_argument("--run-id", default=None, help="recorded in each manifest (default: $CKPTKIT_RUN_ID)")
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds of pretend compute per step")
    args = parser.parse_args()
    if args.steps < 0 or args.save_every < 1:
        parser.error("--steps must be >= 0 and --save-every >= 1")

    ckptkit = find_ckptkit(args.ckptkit)
    root = os.path.abspath(args.root)
    os.makedirs(root, exist_ok=True)

    path, start = resume(ckptkit, root)
    if path is None:
        head, embedding = initial_model()
        print("no checkpoint to resume from: starting at step 0", flush=True)
    else:
        head, embedding = load(path, start)
        print(f"resuming from {path} (step {start})", flush=True)

    for step in range(start + 1, args.steps + 1):
        time.sleep(args.sleep)
        loss = train_step(head, embedding, step)
        saved = ""
        if step % args.save_every == 0 or step == args.steps:
            saved = f" ({save(ckptkit, root, step, head, embedding, args.job_id, args.run_id)})"
        print(f"step {step}: loss {loss:.6f}{saved}", flush=True)

    origin = f"resumed from step {start}" if path else "from scratch"
    print(f"trained to step {max(start, args.steps)} ({origin}); "
          f"weights sha256 {weights_digest(head, embedding)}", flush=True)


if __name__ == "__main__":
    main()
