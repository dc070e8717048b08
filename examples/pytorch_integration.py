"""ckptkit from PyTorch training code: torch.save, torch.distributed.checkpoint (DCP),
DeepSpeed, the Hugging Face Trainer and PyTorch Lightning.

NOT RUN IN CI: torch cannot be installed where the test suite runs, so this file is only
checked with `python3 -m py_compile examples/pytorch_integration.py`. The same protocol is
exercised end to end, without torch, by examples/toy_train_with_ckptkit.py
(tests/integrations_test.ts kills it mid-save and checks the restart).

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

import json
import os
import shlex
import shutil
import subprocess
import time
import uuid

import torch

ROOT = os.environ.get("CKPTKIT_ROOT", "/mnt/ckpts/llama-7b")
JOB_ID = os.environ.get("CKPTKIT_JOB_ID", "llama-7b")
RUN_ID = os.environ.get("CKPTKIT_RUN_ID", f"run-{int(time.time())}")


# --- the ckptkit CLI -------------------------------------------------------------------------


def ckptkit(*args, check=True):
    """Runs `ckptkit ARGS --log-level warn` ($CKPTKIT overrides the command) and returns the result."""
    command = shlex.split(os.environ.get("CKPTKIT", "")) or [shutil.which("ckptkit") or "ckptkit"]
    run = subprocess.run([*command, *args, "--log-level", "warn"], capture_output=True, text=True)
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


def commit(staging, step, root=ROOT, **metadata):
    """Seals STAGING and publishes it as ROOT/step-N (exit 4 `checkpoint_exists` if step-N is already there)."""
    args = ["commit", staging, "--root", root, "--step", str(step), "--job-id", JOB_ID, "--run-id", RUN_ID]
    for key, value in metadata.items():
        args += ["--metadata", f"{key}={value}"]
    return json.loads(ckptkit(*args, "--json").stdout)["path"]


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


def save_torch(model, optimizer, step, root=ROOT, loss=None):
    """torch.save into a staging folder, then commit (single process, or call on rank 0 only)."""
    staging = new_staging(root, step)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step},
               os.path.join(staging, "model.pt"))
    # No fsync needed here: `ckptkit commit` fsyncs every file and folder before the rename.
    return commit(staging, step, root, **({"loss": f"{loss:.4f}"} if loss is not None else {}))


def load_torch(model, optimizer, root=ROOT):
    """Loads the checkpoint ckptkit chooses; returns the step to continue from (0: from scratch)."""
    path, step = resume(root)
    if path is None:
        return 0
    state = torch.load(os.path.join(path, "model.pt"), map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return step


def train(model, optimizer, batches, total_steps, save_every=500, root=ROOT):
    """The loop around them: resume, train, save every N steps."""
    step = load_torch(model, optimizer, root)
    for step in range(step + 1, total_steps + 1):
        loss = model(next(batches)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % save_every == 0 and is_rank0():
            save_torch(model, optimizer, step, root, loss=loss.item())


# --- torch.distributed.checkpoint (DCP): sharded, every rank writes ----------------------------


def save_dcp(model, optimizer, step, root=ROOT):
    """dcp.save of model and optimizer into a shared staging folder, then rank 0 commits."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    staging = shared_staging(root, step)
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=staging)
    barrier()  # every rank's shards and the .metadata file are written
    path = commit(staging, step, root) if is_rank0() else None
    barrier()  # nobody moves on (or saves again) before the checkpoint is published
    return path


def save_dcp_sharded(model, optimizer, step, root=ROOT):
    """dcp.save, then every rank commits its own shards: hashing is spread over all nodes, which
    matters for multi-TB checkpoints. DCP names rank r's files __r_<i>.distcp; the coordinator
    (rank 0) also writes .metadata, and dcp.save returns only after it is written."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    staging = shared_staging(root, step)
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=staging)
    rank = torch.distributed.get_rank()
    mine = sorted(f for f in os.listdir(staging) if f.startswith(f"__{rank}_") and f.endswith(".distcp"))
    if rank == 0:
        mine.append(".metadata")
    return commit_rank(staging, step, mine, root)


def load_dcp(model, optimizer, root=ROOT):
    """Every rank asks ckptkit (read-only, same answer) and dcp.loads it; returns the step."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    path, step = resume(root)
    if path is None:
        return 0
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=path)
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
