"""ckptkit from PyTorch training code: torch.save, torch.distributed.checkpoint (DCP),
DeepSpeed, the Hugging Face Trainer and PyTorch Lightning, and an asynchronous committer.

What runs, on the real torch the machine has (Debian's python3-torch 1.13 in CI;
tests/pytorch_example_test.ts, through tests/pytorch_example_driver.py):
- `train`/`save_torch`/`load_torch` with a tiny nn.Linear model and Adam: committed,
  killed with SIGKILL mid-run and restarted (same final weights as an uninterrupted run),
  and resuming from the previous checkpoint when the newest one's model.pt is damaged;
- `save_torch_rank`/`load_torch_rank` (`commit_rank`) in two processes
  (torch.multiprocessing spawn, gloo backend on 127.0.0.1);
- `AsyncCommitter`/`train_async`: training goes on while the commit runs, a failed
  commit is raised at the next save, a SIGKILL during a commit leaves a valid root;
- the DCP functions: on torch < 2.2 their DcpUnavailableError. Their torch >= 2.2 path
  follows the DCP docs but is not run here (no such torch in Debian 12).
The DeepSpeed and Hugging Face paths run against stand-ins of `deepspeed`'s engine and of
`transformers.TrainerCallback` (neither is packaged for Debian); the Lightning callback is
only compiled (`python3 -m py_compile`).

The protocol is the same for every framework:

1. At start-up, `ckptkit resume ROOT --json`: exit 0 names the checkpoint to load,
   exit 3 means the root never held a checkpoint: start from scratch. Exit 1 means
   checkpoints exist but none is valid: stop, never start over silently (a person
   decides). Load with the framework's own loader.
2. To save, let the framework write into a fresh staging folder INSIDE the root (the final
   rename must not cross file systems), then `ckptkit commit STAGING --root ROOT --step N`:
   it hashes and fsyncs every file, writes the sha256 manifest and renames the folder to
   ROOT/step-N atomically. A kill at any instant leaves the previous checkpoint in place;
   `ckptkit gc` removes staging folders left by killed runs once they are stale.
3. In a distributed job every rank writes into the same staging folder (on a shared file
   system). Then either rank 0 alone commits, between two barriers (it reads every byte), or
   every rank commits the files it wrote (`commit_rank`): each rank hashes its own files, the
   last one to finish merges the parts and commits, and `--wait` replaces the barriers.

Framework imports are inside the functions, so this module imports with torch alone.
"""

import atexit
import inspect
import io
import json
import os
import pickle
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import torch

ROOT = os.environ.get("CKPTKIT_ROOT", "/mnt/ckpts/llama-7b")
JOB_ID = os.environ.get("CKPTKIT_JOB_ID", "llama-7b")
RUN_ID = os.environ.get("CKPTKIT_RUN_ID", f"run-{int(time.time())}")


# --- the ckptkit CLI -------------------------------------------------------------------------


def ckptkit_command():
    """The ckptkit command line as a list: $CKPTKIT (split like a shell would, never run by one), else PATH."""
    return shlex.split(os.environ.get("CKPTKIT", "")) or [shutil.which("ckptkit") or "ckptkit"]


def ckptkit(*args, check=True):
    """Runs `ckptkit ARGS --log-level warn` ($CKPTKIT overrides the command) and returns the result."""
    run = subprocess.run([*ckptkit_command(), *args, "--log-level", "warn"], capture_output=True, text=True)
    if check and run.returncode != 0:
        raise RuntimeError(f"ckptkit {args[0]} failed (exit {run.returncode}): {run.stderr.strip()}")
    return run


def resume(root=ROOT):
    """(checkpoint path, step) to resume from, or (None, 0) on a first start (exit 3).

    Raises when checkpoints exist but none is valid (exit 1, no_valid_checkpoint): starting
    from scratch then would silently throw the training history away.
    """
    os.makedirs(root, exist_ok=True)  # a missing root is a usage error (exit 2), an empty one exit 3
    run = ckptkit("resume", root, "--json", check=False)
    if run.returncode == 3:
        return None, 0
    if run.returncode == 1:
        message = json.loads(run.stdout).get("message")
        raise RuntimeError(f"ckptkit resume: {message} (root {root}); not starting from scratch")
    if run.returncode != 0:
        raise RuntimeError(f"ckptkit resume failed (exit {run.returncode}): {run.stderr.strip()}")
    chosen = json.loads(run.stdout)["chosen"]
    return chosen["path"], chosen["step"]


def new_staging(root, step):
    """A fresh staging folder inside the root, unique so a killed run's leftovers are never reused."""
    os.makedirs(root, exist_ok=True)
    staging = os.path.join(root, f".staging-step-{step}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.mkdir(staging)
    return staging


def commit_args(staging, step, root=ROOT, **metadata):
    """The arguments of `ckptkit commit STAGING --root ROOT --step N ...`."""
    args = ["commit", staging, "--root", root, "--step", str(step), "--job-id", JOB_ID, "--run-id", RUN_ID]
    for key, value in metadata.items():
        args += ["--metadata", f"{key}={value}"]
    return args


def commit(staging, step, root=ROOT, **metadata):
    """Seals STAGING and publishes it as ROOT/step-N (exit 4 `checkpoint_exists` if step-N is already there)."""
    return json.loads(ckptkit(*commit_args(staging, step, root, **metadata), "--json").stdout)["path"]


def existing_step(step, root=ROOT):
    """Before saving step N: the path of a sound ROOT/step-N an earlier attempt committed (keep it), or None.

    A run killed after step-N was renamed into place but before `latest` moved, or a restart
    that fell back past a damaged step-N, finds step-N already there; a committed checkpoint
    is never replaced. When it validates it is kept (in deterministic training it holds these
    very weights; otherwise it is a sound checkpoint of the earlier attempt); when it does not,
    it is quarantined (moved to ROOT/corrupt/) so this step can be committed again.
    """
    path = os.path.join(root, f"step-{step}")
    if not os.path.isdir(path):
        return None
    check = ckptkit("validate", path, check=False)
    if check.returncode == 0:
        return path
    if check.returncode != 1:  # 1: problems found; anything else: ckptkit could not tell
        raise RuntimeError(f"ckptkit validate {path} failed (exit {check.returncode}): {check.stderr.strip()}")
    ckptkit("quarantine", path)
    return None


def commit_rank(staging, step, files, root=ROOT, timeout="30m"):
    """Multi-rank commit: records the files THIS rank wrote (relative to STAGING) and blocks until
    the checkpoint is committed by whichever rank completes the set. Returns the checkpoint's path."""
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    run = ckptkit("commit", staging, "--root", root, "--step", str(step), "--job-id", JOB_ID, "--run-id", RUN_ID,
                  "--rank", str(rank), "--world-size", str(world), *(["--rank-files", *files] if files else []),
                  "--wait", "--wait-timeout", timeout, "--json")
    return json.loads(run.stdout)["path"]


def is_rank0():
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def barrier():
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def shared_staging(root, step):
    """Rank 0 creates the staging folder and every rank learns its name."""
    name = [new_staging(root, step) if is_rank0() else None]
    if torch.distributed.is_initialized():
        torch.distributed.broadcast_object_list(name, src=0)
    return name[0]


# --- plain PyTorch: torch.save / torch.load ----------------------------------------------------


def torch_version():
    """(major, minor) of the installed torch. Debian's 1.13.1 calls itself "1.13.0a0", which a
    string comparison puts below "1.13": compare these numbers instead."""
    match = re.match(r"(\d+)\.(\d+)", str(torch.__version__))
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


_FLOAT_PROBE = []


def weights_only_loads_floats():
    """Whether this torch's weights-only unpickler reads a Python float (pickle opcode BINFLOAT).

    An optimizer's state_dict holds floats (lr, betas, eps, weight_decay). torch 1.13's
    restricted unpickler has no BINFLOAT and fails with "Unsupported operand 71"
    (pytorch/pytorch#94670, reported against 1.13.1); from torch 2.0 it loads them. Probed,
    not inferred from the version, so a build in between gets the answer it really has.
    """
    if not _FLOAT_PROBE:
        buffer = io.BytesIO()
        torch.save({"lr": 0.5}, buffer)
        buffer.seek(0)
        try:
            _FLOAT_PROBE.append(torch.load(buffer, weights_only=True) == {"lr": 0.5})
        except (pickle.UnpicklingError, RuntimeError, TypeError):
            _FLOAT_PROBE.append(False)
    return _FLOAT_PROBE[0]


def load_validated(path, allow_pickle_fallback=True):
    """torch.load of a file of a checkpoint `ckptkit resume` (or `validate`) has just validated.

    weights_only=True first: the restricted unpickler builds tensors, dicts, lists and numbers
    from an allowlist and refuses everything else, so a crafted file cannot make it import or
    call arbitrary code. From torch 2.0 it loads a
    model's and an optimizer's state_dict, and this function never does anything else: an
    UnpicklingError there is raised.

    On torch < 2.0 (1.13 is the first with weights_only at all) the restricted unpickler cannot
    read a float, so no optimizer state loads that way; then, and only when the probe above
    says so, the file is loaded again with weights_only=False, i.e. with the full pickle
    machinery, which executes whatever the file asks for. The trade-off: ckptkit has just
    checked every byte of this file against the sha256 manifest written when this job
    committed it, so a damaged, truncated or half-written file never reaches pickle (the
    damage is caught before, and resume falls back to an older checkpoint). What the manifest
    does not prove is who wrote the file: it is a checksum, not a signature, and anyone who
    can write into the root can write a matching manifest. The fallback is therefore as safe
    as the root's write permissions: fine for a job's own checkpoint folder, not for files
    from elsewhere. allow_pickle_fallback=False refuses instead (then upgrade to torch >= 2.0,
    or save the optimizer's floats as tensors).
    """
    if torch_version() < (1, 13):  # no weights_only argument at all
        if not allow_pickle_fallback:
            raise RuntimeError(f"torch {torch.__version__} has no weights_only loader (1.13 added it)")
        return torch.load(path, map_location="cpu")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not allow_pickle_fallback or weights_only_loads_floats():
            raise
    return torch.load(path, map_location="cpu", weights_only=False)


def training_state(model, optimizer, step):
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}


def save_torch(model, optimizer, step, root=ROOT, loss=None):
    """torch.save into a staging folder, then commit (single process, or call on rank 0 only)."""
    kept = existing_step(step, root)
    if kept:
        return kept
    staging = new_staging(root, step)
    torch.save(training_state(model, optimizer, step), os.path.join(staging, "model.pt"))
    # No fsync needed here: `ckptkit commit` fsyncs every file and folder before the rename.
    return commit(staging, step, root, **({"loss": f"{loss:.4f}"} if loss is not None else {}))


def load_torch(model, optimizer, root=ROOT, allow_pickle_fallback=True):
    """Loads the checkpoint ckptkit chooses; returns the step to continue from (0: from scratch)."""
    path, step = resume(root)
    if path is None:
        return 0
    state = load_validated(os.path.join(path, "model.pt"), allow_pickle_fallback)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return step


def train_step(model, optimizer, batch):
    loss = model(batch).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def train(model, optimizer, get_batch, total_steps, save_every=500, root=ROOT):
    """The loop around them: resume, train, save every N steps; returns the last step.

    get_batch(step) gives the batch of that step (a sampler that can seek), so a resumed run
    sees the data an uninterrupted one would have seen."""
    step = load_torch(model, optimizer, root)
    for step in range(step + 1, total_steps + 1):
        loss = train_step(model, optimizer, get_batch(step))
        if step % save_every == 0 and is_rank0():
            save_torch(model, optimizer, step, root, loss=loss)
    return step


# --- every rank saves its own torch.save file and commits it (commit_rank) ---------------------


def save_torch_rank(model, optimizer, step, root=ROOT, timeout="30m"):
    """Each rank torch.saves its own state (model-rank-<r>.pt: its shard of a sharded model, its
    optimizer state) into one shared staging folder and commits that file; the rank that
    completes the set publishes ROOT/step-N for all, and every rank returns its path. Every
    rank must commit with the same job and run id (set CKPTKIT_RUN_ID, e.g. to $SLURM_JOB_ID:
    the default, run-<start time>, can differ between ranks)."""
    staging = shared_staging(root, step)
    name = f"model-rank-{torch.distributed.get_rank()}.pt"
    torch.save(training_state(model, optimizer, step), os.path.join(staging, name))
    return commit_rank(staging, step, [name], root, timeout)


def load_torch_rank(model, optimizer, root=ROOT, allow_pickle_fallback=True):
    """Rank 0 asks ckptkit, every rank loads its own file of that same checkpoint; returns
    (path, step), identical on every rank ((None, 0): from scratch)."""
    chosen = [resume(root) if is_rank0() else None]
    torch.distributed.broadcast_object_list(chosen, src=0)  # one answer, even if a commit lands meanwhile
    path, step = chosen[0]
    if path is not None:
        state = load_validated(os.path.join(path, f"model-rank-{torch.distributed.get_rank()}.pt"),
                               allow_pickle_fallback)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    return path, step


# --- asynchronous commits: training goes on while ckptkit hashes, fsyncs and renames -----------


class CommitError(RuntimeError):
    """A background `ckptkit commit` failed: exit code, reason (`checkpoint_exists`, ...) and
    ckptkit's one-line error. Its staging folder stays (for inspection; `ckptkit gc` removes it)."""

    def __init__(self, step, code, reason, line, staging):
        super().__init__(f"ckptkit commit of step {step} failed (exit {code}): {line}")
        self.step, self.code, self.reason, self.staging = step, code, reason, staging


class AsyncCommitter:
    """Commits in the background, as DCP's async_save and Orbax's async checkpointer do.

    save() writes the staging folder (synchronously: the state is captured at that step), then
    starts `ckptkit commit` with subprocess.Popen and returns at once; the commit (hashing and
    fsyncing every file, the rename, `latest`) overlaps the next training steps. The next
    save() first waits for the previous commit and raises its CommitError if it failed, so a
    failure is never lost and at most one commit is in flight. Leaving a `with` block (or
    close(), or interpreter exit as a last resort) waits as well.

    A kill at any instant is safe as for a synchronous commit: the previous checkpoint stays
    the newest valid one until the new one is completely in place, and the staging folder of
    an unfinished commit is left for `ckptkit scan` to report and `ckptkit gc` to remove.

        with AsyncCommitter(root) as committer:
            for step in ...:
                ...
                if step % 500 == 0:
                    committer.save(lambda staging: torch.save(state, f"{staging}/model.pt"), step)
    """

    def __init__(self, root=ROOT):
        self.root = root
        self.process = None  # the commit in flight (subprocess.Popen), if any
        self.step = None  # its step
        self.staging = None  # its staging folder
        self.path = None  # the checkpoint the last successful commit published
        self._output = None
        atexit.register(self._wait_at_exit)

    def save(self, write, step, **metadata):
        """Waits for the previous commit (raising its failure), calls write(staging) on a fresh
        staging folder, starts its commit in the background and returns the staging folder."""
        self.wait()
        staging = new_staging(self.root, step)
        write(staging)
        self.start(staging, step, **metadata)
        return staging

    def start(self, staging, step, **metadata):
        """Starts `ckptkit commit STAGING` in the background (after the previous one finished)."""
        self.wait()
        # Files, not pipes: a child that writes more than a pipe holds never blocks on us.
        self._output = (tempfile.TemporaryFile(), tempfile.TemporaryFile())
        args = [*ckptkit_command(), *commit_args(staging, step, self.root, **metadata), "--json", "--log-level", "warn"]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._output[0],
                                        stderr=self._output[1])
        self.step, self.staging = step, staging

    def running(self):
        """True while a commit is in flight (never blocks)."""
        return self.process is not None and self.process.poll() is None

    def wait(self):
        """Waits for the commit in flight; returns the checkpoint it published (None when there
        was none), or raises its CommitError."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        code = process.wait()
        stdout, stderr = (self._read(f) for f in self._output)
        self._output = None
        if code != 0:
            try:
                reason = json.loads(stdout)["error"]["reason"]
            except (ValueError, KeyError, TypeError):
                reason = None
            lines = [line for line in stderr.splitlines() if line.startswith("ckptkit: error:")]
            raise CommitError(self.step, code, reason, lines[0] if lines else stderr.strip(), self.staging)
        self.path = json.loads(stdout)["path"]
        return self.path

    def close(self):
        atexit.unregister(self._wait_at_exit)
        return self.wait()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            try:
                self.close()
            except CommitError as failure:  # do not hide the exception already on its way
                print(f"AsyncCommitter: {failure}", file=sys.stderr)
        return False

    @staticmethod
    def _read(file):
        file.seek(0)
        text = file.read().decode("utf-8", "replace")
        file.close()
        return text

    def _wait_at_exit(self):
        try:
            self.wait()
        except CommitError as failure:
            print(f"AsyncCommitter: at exit: {failure}", file=sys.stderr)


def train_async(model, optimizer, get_batch, total_steps, save_every=500, root=ROOT):
    """train() with AsyncCommitter: each save returns as soon as model.pt is written."""
    step = load_torch(model, optimizer, root)
    with AsyncCommitter(root) as committer:
        for step in range(step + 1, total_steps + 1):
            loss = train_step(model, optimizer, get_batch(step))
            if step % save_every == 0 and is_rank0():
                committer.wait()  # existing_step must not race our own commit in flight
                if existing_step(step, root):
                    continue
                state = training_state(model, optimizer, step)
                committer.save(lambda staging: torch.save(state, os.path.join(staging, "model.pt")), step,
                               loss=f"{loss:.4f}")
    return step


# --- torch.distributed.checkpoint (DCP): sharded, every rank writes ----------------------------


class DcpUnavailableError(RuntimeError):
    """The installed torch has no usable torch.distributed.checkpoint."""


def dcp_api():
    """(dcp, get_state_dict, set_state_dict, target) for the installed torch, else DcpUnavailableError.

    torch.distributed.checkpoint exists from torch 2.0 (1.13 only has
    torch.distributed._shard.checkpoint, which does not even import on Python 3.11);
    get_state_dict/set_state_dict (torch.distributed.checkpoint.state_dict) and dcp.save/dcp.load
    appeared in 2.2, where they take a storage writer/reader; from 2.3 they also take
    checkpoint_id=PATH. target(path, saving) gives the keyword arguments this torch wants.
    """
    needed = "save_dcp/load_dcp need torch >= 2.2 (dcp.save and torch.distributed.checkpoint.state_dict)"
    if torch_version() < (2, 2):
        raise DcpUnavailableError(f"PyTorch DCP is unavailable in torch {torch.__version__}: {needed}; "
                                  "use save_torch/load_torch or save_torch_rank/load_torch_rank")
    try:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    except Exception as failure:  # an ImportError, or any error a broken build raises while importing
        raise DcpUnavailableError(f"PyTorch DCP is unavailable in torch {torch.__version__}: {needed} "
                                  f"({type(failure).__name__}: {failure})") from failure

    def target(path, saving):
        if "checkpoint_id" in inspect.signature(dcp.save if saving else dcp.load).parameters:
            return {"checkpoint_id": path}  # torch >= 2.3
        return {"storage_writer": dcp.FileSystemWriter(path)} if saving else \
            {"storage_reader": dcp.FileSystemReader(path)}  # torch 2.2

    return dcp, get_state_dict, set_state_dict, target


def save_dcp(model, optimizer, step, root=ROOT):
    """dcp.save of model and optimizer into a shared staging folder, then rank 0 commits."""
    dcp, get_state_dict, _, target = dcp_api()  # before any folder is made
    staging = shared_staging(root, step)
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, **target(staging, True))
    barrier()  # every rank's shards and the .metadata file are written
    path = commit(staging, step, root) if is_rank0() else None
    barrier()  # nobody moves on (or saves again) before the checkpoint is published
    return path


def save_dcp_sharded(model, optimizer, step, root=ROOT):
    """dcp.save, then every rank commits its own shards: hashing is spread over all nodes, which
    matters for multi-TB checkpoints. DCP names rank r's files __r_<i>.distcp; the coordinator
    (rank 0) also writes .metadata, and dcp.save returns only after it is written."""
    dcp, get_state_dict, _, target = dcp_api()
    staging = shared_staging(root, step)
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, **target(staging, True))
    rank = torch.distributed.get_rank()
    mine = sorted(f for f in os.listdir(staging) if f.startswith(f"__{rank}_") and f.endswith(".distcp"))
    if rank == 0:
        mine.append(".metadata")
    return commit_rank(staging, step, mine, root)


def load_dcp(model, optimizer, root=ROOT):
    """Every rank asks ckptkit (read-only, same answer) and dcp.loads it; returns the step."""
    dcp, get_state_dict, set_state_dict, target = dcp_api()
    path, step = resume(root)
    if path is None:
        return 0
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, **target(path, False))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    return step


# --- DeepSpeed ---------------------------------------------------------------------------------


def save_deepspeed(model_engine, step, root=ROOT):
    """model_engine.save_checkpoint (collective) into a shared staging folder, then rank 0 commits."""
    staging = shared_staging(root, step)
    model_engine.save_checkpoint(staging, tag=f"global_step{step}", client_state={"step": step})
    barrier()
    path = commit(staging, step, root) if is_rank0() else None
    barrier()
    return path


def load_deepspeed(model_engine, root=ROOT):
    path, step = resume(root)
    if path is None:
        return 0
    model_engine.load_checkpoint(path, tag=f"global_step{step}")
    return step


# --- Hugging Face Trainer ----------------------------------------------------------------------


def hf_callback(root=ROOT, move=True):
    """A TrainerCallback that hands every checkpoint-N the Trainer saved to ckptkit.

    move=True commits output_dir/checkpoint-N into ROOT as step-N (output_dir must be on the
    same file system as ROOT, beside it rather than inside it); resume with
    `trainer.train(resume_from_checkpoint=resume(ROOT)[0])`. Trainer features that remember
    checkpoint paths (save_total_limit, load_best_model_at_end) then see no checkpoints: use
    `ckptkit gc` for retention, or move=False, which seals checkpoint-N in place instead.

        trainer = Trainer(model=model, args=TrainingArguments(output_dir="/mnt/ckpts/hf-out", ...),
                          callbacks=[hf_callback()])
    """
    from transformers import TrainerCallback

    class CkptkitCallback(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            # on_save runs after the Trainer has written checkpoint-N (model, optimizer, trainer_state.json).
            if state.is_world_process_zero:
                folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
                if move:
                    commit(folder, state.global_step, root)
                else:
                    ckptkit("seal", folder, "--job-id", JOB_ID, "--run-id", RUN_ID)
            return control

    return CkptkitCallback()


# --- PyTorch Lightning -------------------------------------------------------------------------


def lightning_callback(root=ROOT, every_n_steps=500):
    """A Lightning Callback that saves every N steps through a staging folder and ckptkit commit
    (use it instead of ModelCheckpoint). Resume with `trainer.fit(model, ckpt_path=...)`:

        path, _ = resume(ROOT)
        trainer = L.Trainer(callbacks=[lightning_callback()], enable_checkpointing=False)
        trainer.fit(model, ckpt_path=os.path.join(path, "model.ckpt") if path else None)

    A ModelCheckpoint whose folders are sealed afterwards (`ckptkit seal epoch=0-step=500.ckpt`
    with a DeepSpeed strategy, which writes folders) works too, without the atomic publish.
    """
    import lightning.pytorch as pl

    class CkptkitCheckpoint(pl.Callback):
        last_saved = -1

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step = trainer.global_step
            # With gradient accumulation several batches end at the same global step: save once.
            if step == 0 or step % every_n_steps or step == self.last_saved:
                return
            self.last_saved = step
            name = trainer.strategy.broadcast(new_staging(root, step) if trainer.is_global_zero else None)
            trainer.save_checkpoint(os.path.join(name, "model.ckpt"))  # collective
            trainer.strategy.barrier()
            if trainer.is_global_zero:
                commit(name, step, root)
            trainer.strategy.barrier()

    return CkptkitCheckpoint()
