"""Drives examples/pytorch_integration.py on the real torch for tests/pytorch_example_test.ts.

    python3 tests/pytorch_example_driver.py COMMAND ROOT [ARGS...]

Every command prints what the test checks, one fact a line, and exits non-zero on failure.
$CKPTKIT is the ckptkit command line (the test passes this checkout's cli.ts under deno).
"""

import hashlib
import json
import os
import signal
import socket
import sys
import time
import types

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import torch  # noqa: E402

import pytorch_integration as pi  # noqa: E402

BACKSTOP_S = 240  # only catches a hang; no assertion depends on time


def say(*parts):
    print(*parts, flush=True)


def model_and_optimizer(optimizer="adam"):
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    if optimizer == "adam":
        return model, torch.optim.Adam(model.parameters(), lr=0.01)
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def batch_for(step, sleep=0.0):
    """The batch of a step, the same in every run."""
    if sleep:
        time.sleep(sleep)
    return torch.randn(16, 8, generator=torch.Generator().manual_seed(1000 + step))


def digest(model, optimizer):
    """sha256 of the model's weights and of the optimizer's tensors, in a fixed order."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().contiguous().numpy().tobytes())
    for index, state in sorted(optimizer.state_dict()["state"].items()):
        for key, value in sorted(state.items()):
            h.update(f"{index}.{key}".encode())
            h.update(value.detach().contiguous().numpy().tobytes() if torch.is_tensor(value) else repr(value).encode())
    return h.hexdigest()


def stderr_so_far(committer):
    """What the background commit printed on stderr so far (read without moving its offset)."""
    return os.pread(committer._output[1].fileno(), 1 << 16, 0).decode("utf-8", "replace")


def cmd_version(_root):
    say(json.dumps({"torch": str(torch.__version__), "version": list(pi.torch_version()),
                    "weights_only_floats": pi.weights_only_loads_floats()}))


def cmd_train(root, total, save_every, mode="sync", sleep="0", optimizer="adam"):
    model, opt = model_and_optimizer(optimizer)
    path, step = pi.resume(root)
    say(f"resuming from {path} (step {step})" if path else "starting from scratch")
    train = pi.train_async if mode == "async" else pi.train
    last = train(model, opt, lambda s: batch_for(s, float(sleep)), int(total), int(save_every), root)
    say(f"trained to step {last}; weights sha256 {digest(model, opt)}")


def cmd_load(root, optimizer="adam"):
    """Loads the checkpoint resume chooses into a fresh model and prints its digest."""
    model, opt = model_and_optimizer(optimizer)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    step = pi.load_torch(model, opt, root)
    say(f"loaded step {step}; weights sha256 {digest(model, opt)}")
    try:
        pi.load_torch(model, opt, root, allow_pickle_fallback=False)
        say("weights_only=True loaded it")
    except Exception as failure:  # noqa: BLE001 - the test reads the class and message
        say(f"weights_only=True refused it: {type(failure).__name__}: {str(failure)[:200]}")


def cmd_dcp(root):
    """DCP on the installed torch: the DcpUnavailableError before 2.2, a save and load in a one-rank group after."""
    model, opt = model_and_optimizer()
    try:
        pi.dcp_api()
    except pi.DcpUnavailableError as failure:
        for name, call in (("save_dcp", lambda: pi.save_dcp(model, opt, 1, root)),
                           ("save_dcp_sharded", lambda: pi.save_dcp_sharded(model, opt, 1, root)),
                           ("load_dcp", lambda: pi.load_dcp(model, opt, root))):
            try:
                call()
            except pi.DcpUnavailableError as again:
                say(f"{name}: DcpUnavailableError: {again}")
            else:
                raise AssertionError(f"{name} did not raise DcpUnavailableError: {failure}")
        return
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    try:
        train_steps(model, opt, 1, 3)
        expected = digest(model, opt)
        say(f"save_dcp: {pi.save_dcp(model, opt, 3, root)}")
        model2, opt2 = model_and_optimizer()
        train_steps(model2, opt2, 1, 1)  # so its optimizer state has the tensors dcp.load fills in place
        say(f"load_dcp: step {pi.load_dcp(model2, opt2, root)}, same weights {digest(model2, opt2) == expected}")
    finally:
        torch.distributed.destroy_process_group()


def train_steps(model, opt, first, last):
    for step in range(first, last + 1):
        pi.train_step(model, opt, batch_for(step))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_worker(rank, world, port, root, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model, opt = model_and_optimizer()
        with torch.no_grad():  # each rank holds other weights, as shards of a sharded model do
            model.weight.add_(rank)
        train_steps(model, opt, 1, 2)
        saved = digest(model, opt)
        path = pi.save_torch_rank(model, opt, 2, root, timeout="3m")
        paths = [None] * world
        torch.distributed.all_gather_object(paths, path)
        # Resume on every rank into fresh objects: the same checkpoint, each its own file.
        fresh, fresh_opt = model_and_optimizer()
        resumed, step = pi.load_torch_rank(fresh, fresh_opt, root)
        same = digest(fresh, fresh_opt) == saved
        report = {"rank": rank, "path": path, "paths": paths, "resumed": resumed, "step": step, "same_weights": same}
        with open(os.path.join(out, f"rank-{rank}.json"), "w") as f:
            json.dump(report, f)
    finally:
        torch.distributed.destroy_process_group()


def cmd_multirank(root, out):
    import torch.multiprocessing as mp

    port = free_port()
    mp.spawn(rank_worker, args=(2, port, root, out), nprocs=2, join=True)
    for rank in range(2):
        with open(os.path.join(out, f"rank-{rank}.json")) as f:
            say(f.read())


def cmd_async_overlap(root):
    """Steps trained while a commit is held at before_rename ($CKPTKIT_TEST_PAUSE_AT), counted."""
    model, opt = model_and_optimizer()
    committer = pi.AsyncCommitter(root)
    train_steps(model, opt, 1, 1)
    state = pi.training_state(model, opt, 1)
    committer.save(lambda staging: torch.save(state, os.path.join(staging, "model.pt")), 1)
    steps_during_commit, step, deadline = 0, 1, time.monotonic() + BACKSTOP_S
    # Train until the paused commit says so (and at least 3 steps), checking each step that it
    # is still in flight: the steps counted all ran between Popen and wait.
    while steps_during_commit < 3 or '"test_paused"' not in stderr_so_far(committer):
        assert time.monotonic() < deadline, f"the commit never paused: {stderr_so_far(committer)}"
        step += 1
        pi.train_step(model, opt, batch_for(step))
        assert committer.running(), f"the commit ended while held: {stderr_so_far(committer)}"
        steps_during_commit += 1
    say(f"steps trained while the commit ran: {steps_during_commit}")
    os.kill(committer.process.pid, signal.SIGUSR1)  # let it finish
    say(f"committed {committer.wait()}; running afterwards: {committer.running()}")
    committer.close()


def cmd_async_fail(root):
    """A background commit that fails (step-2 is already there) is raised by the next save."""
    model, opt = model_and_optimizer()
    write = (lambda state: lambda staging: torch.save(state, os.path.join(staging, "model.pt")))
    with pi.AsyncCommitter(root) as committer:
        train_steps(model, opt, 1, 2)
        committer.save(write(pi.training_state(model, opt, 2)), 2)  # another run committed step-2 already
        train_steps(model, opt, 3, 4)
        try:
            committer.save(write(pi.training_state(model, opt, 4)), 4)
        except pi.CommitError as failure:
            say(f"next save raised: step {failure.step}, exit {failure.code}, reason {failure.reason}: {failure}")
        else:
            raise AssertionError("the failed commit of step 2 was not raised")
        say(f"step 4 not started: {committer.process is None}")
        # The failure is raised once: saving again works.
        committer.save(write(pi.training_state(model, opt, 4)), 4)
    say(f"then committed {committer.path}")
    # Leaving the block waits, and raises a failure of the last commit too.
    try:
        with pi.AsyncCommitter(root) as committer:
            committer.save(write(pi.training_state(model, opt, 4)), 4)
    except pi.CommitError as failure:
        say(f"at exit: {failure.reason}")


def cmd_async_kill(root, pause):
    """Commits step 1 and waits, starts committing step 2, then trains until the test kills the group."""
    model, opt = model_and_optimizer()
    committer = pi.AsyncCommitter(root)
    write = (lambda state: lambda staging: torch.save(state, os.path.join(staging, "model.pt")))
    train_steps(model, opt, 1, 1)
    committer.save(write(pi.training_state(model, opt, 1)), 1)
    say(f"committed {committer.wait()}")
    train_steps(model, opt, 2, 2)
    if pause == "pause":
        os.environ["CKPTKIT_TEST_PAUSE_AT"] = "before_rename"
    committer.save(write(pi.training_state(model, opt, 2)), 2)
    say(f"committing step 2 (pid {committer.process.pid})")
    step, deadline, told = 2, time.monotonic() + BACKSTOP_S, False
    while time.monotonic() < deadline:  # until the test kills the process group
        step += 1
        pi.train_step(model, opt, batch_for(step))
        if not told and pause == "pause" and '"test_paused"' in stderr_so_far(committer):
            say(f"paused at step {step}")
            told = True
        if not told and pause != "pause" and not committer.running():
            say(f"commit ended at step {step}: {committer.wait()}")
            told = True
        time.sleep(0.001)
    say("not killed")
    sys.exit(3)


def cmd_standins(root, out):
    """DeepSpeed and Hugging Face paths, on real torch, against stand-ins of deepspeed's engine
    and of transformers.TrainerCallback (neither is installable here)."""
    sys.modules["transformers"] = types.SimpleNamespace(TrainerCallback=object)

    class Engine:  # DeepSpeed's save_checkpoint writes <dir>/<tag>/...
        loaded = None

        def save_checkpoint(self, save_dir, tag, client_state):
            os.makedirs(os.path.join(save_dir, tag))
            torch.save({"module": torch.nn.Linear(2, 2).state_dict(), "client_state": client_state},
                       os.path.join(save_dir, tag, "mp_rank_00_model_states.pt"))

        def load_checkpoint(self, path, tag):
            self.loaded = os.path.join(path, tag)

    pi.save_deepspeed(Engine(), 200, root)
    engine = Engine()
    assert pi.load_deepspeed(engine, root) == 200 and engine.loaded.endswith("/step-200/global_step200"), engine.loaded

    for step, move in ((300, True), (400, False)):  # the Trainer has written checkpoint-N when on_save runs
        os.makedirs(os.path.join(out, f"checkpoint-{step}"))
        with open(os.path.join(out, f"checkpoint-{step}", "trainer_state.json"), "w") as f:
            f.write("{}")
        pi.hf_callback(root, move=move).on_save(types.SimpleNamespace(output_dir=out),
                                                types.SimpleNamespace(global_step=step, is_world_process_zero=True),
                                                None)

    damaged = os.path.join(os.path.dirname(out), "damaged")  # held a checkpoint, none valid: never start over
    os.makedirs(os.path.join(damaged, "step-5"))
    try:
        pi.resume(damaged)
    except RuntimeError as e:
        assert "no valid checkpoint" in str(e) and "not starting from scratch" in str(e), e
    else:
        raise AssertionError("resume started from scratch on a root whose checkpoints are all invalid")
    say("ok")


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    globals()["cmd_" + command.replace("-", "_")](*arguments)
