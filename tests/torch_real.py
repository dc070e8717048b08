#!/usr/bin/env python3
"""Real-PyTorch side of tests/torch_real_test.ts: writes checkpoints with the
installed torch (Debian's python3-torch, 1.13), damages them on disk, and
reports what torch.load makes of them. Deterministic: every tensor comes from
a seeded generator, so `verify` rebuilds what `write` saved and compares.

    torch_real.py write  OUT        torch.save zip + legacy files, a DeepSpeed folder, Trainer folders
    torch_real.py layouts OUT       Trainer folders with and without optimizer.pt / scheduler.pt
    torch_real.py verify SPEC.json  torch.load each file SPEC lists; compare with what write saved
    torch_real.py matrix OUT        zip + legacy originals, damaged copies, and torch.load's verdict on each

Prints one JSON document on stdout. Exits 17 when `import torch` fails (the
test then says python3-torch is needed), 1 on any other error.
"""

import argparse
import collections
import json
import os
import pickle
import random
import shutil
import struct
import sys
import zipfile

import torch  # the test runs this with the python3 that imports torch (tests/_helpers.ts torchPython)


# ---------------------------------------------------------------------------
# What is saved (rebuilt identically by verify)


def model_state(seed):
    """A small model's state_dict. embed.weight (256 KiB) holds whole 4 KiB blocks, and cut in half it leaves a
    file over 68 KiB: torch 1.13 reads shorter truncated zip files with a negative seek (OSError) instead of
    reporting the missing central directory, which no real checkpoint is small enough to show."""
    g = torch.Generator().manual_seed(seed)
    return collections.OrderedDict(
        [
            ("embed.weight", torch.randn(256, 256, generator=g)),
            ("head.weight", torch.randn(16, 128, generator=g)),
            ("head.bias", torch.randn(16, generator=g)),
            ("norm.weight", torch.randn(128, generator=g).to(torch.float16)),
            ("positions", torch.arange(seed, seed + 32, dtype=torch.int64)),
        ]
    )


def trained(seed):
    """A real model, optimizer and scheduler after two steps: their real state_dicts."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    for _ in range(2):
        loss = model(torch.randn(8, 32)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer, scheduler


def plain_checkpoint(seed, step):
    model, optimizer, _ = trained(seed)
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}


def deepspeed_model_states(seed, step, dp):
    """The keys DeepSpeed's engine.save_checkpoint puts in mp_rank_XX_model_states.pt (ZeRO stage 1/2)."""
    model, _, scheduler = trained(seed)
    sd = model.state_dict()
    return {
        "module": sd,
        "buffer_names": [],
        "optimizer": None,
        "param_shapes": [collections.OrderedDict((k, v.shape) for k, v in sd.items())],
        "frozen_param_shapes": None,
        "shared_params": {},
        "frozen_param_fragments": None,
        "lr_scheduler": scheduler.state_dict(),
        "data_sampler": None,
        "random_ltd": None,
        "sparse_tensor_module_names": set(),
        "skipped_steps": 0,
        "global_steps": step,
        "global_samples": step * 8 * dp,
        "dp_world_size": dp,
        "mp_world_size": 1,
        "ds_config": {"train_batch_size": 8 * dp, "zero_optimization": {"stage": 2}},
        "ds_version": "0.14.0",
    }


def deepspeed_optim_states(seed, rank, dp):
    """A ZeRO-2 rank's optimizer shard: its slice of the flat fp32 parameters and Adam moments."""
    model, optimizer, _ = trained(seed)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    part = flat.chunk(dp)[rank].clone()
    g = torch.Generator().manual_seed(seed * 100 + rank)
    return {
        "optimizer_state_dict": {
            "loss_scaler": None,
            "dynamic_loss_scale": False,
            "overflow": False,
            "clip_grad": 1.0,
            "base_optimizer_state": {
                "state": {0: {"step": torch.tensor(2.0), "exp_avg": torch.randn(part.numel(), generator=g),
                              "exp_avg_sq": torch.rand(part.numel(), generator=g)}},
                "param_groups": [{k: v for k, v in optimizer.param_groups[0].items() if k != "params"} | {"params": [0]}],
            },
            "single_partition_of_fp32_groups": [part],
            "zero_stage": 2,
            "group_paddings": [0],
            "partition_count": [dp],
            "ds_version": "0.14.0",
            "param_slice_mappings": [],
        },
        "ds_config": {"train_batch_size": 8 * dp, "zero_optimization": {"stage": 2}},
        "ds_version": "0.14.0",
    }


def rng_state(seed):
    """What Trainer._save_rng_state saves on a CPU-only machine (numpy's entry only when numpy imports)."""
    random.seed(seed)
    torch.manual_seed(seed)
    state = {"python": random.getstate(), "cpu": torch.random.get_rng_state()}
    try:
        import numpy as np

        np.random.seed(seed)
        state["numpy"] = np.random.get_state()
    except ImportError:
        pass
    return state


def training_args(step):
    """training_args.bin: the Trainer pickles its TrainingArguments; a Namespace stands in (loadable anywhere)."""
    return argparse.Namespace(output_dir="out", save_steps=step, save_only_model=False, seed=42)


def trainer_state(step):
    """trainer_state.json as TrainerState.save_to_json writes it (indent 2, sorted keys, trailing newline)."""
    state = {
        "best_global_step": None,
        "best_metric": None,
        "best_model_checkpoint": None,
        "epoch": step / 20,
        "eval_steps": 500,
        "global_step": step,
        "is_hyper_param_search": False,
        "is_local_process_zero": True,
        "is_world_process_zero": True,
        "log_history": [{"epoch": step / 20, "grad_norm": 0.5, "learning_rate": 5e-05, "loss": 1.25, "step": step}],
        "logging_steps": 10,
        "max_steps": 200,
        "num_input_tokens_seen": 0,
        "num_train_epochs": 10,
        "save_steps": step,
        "stateful_callbacks": {},
        "total_flos": 0.0,
        "train_batch_size": 8,
        "trial_name": None,
        "trial_params": None,
    }
    return json.dumps(state, indent=2, sort_keys=True) + "\n"


SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.int64: "I64"}


def save_safetensors(tensors, path):
    """model.safetensors in the safetensors format (python3-safetensors is not packaged here): 8-byte
    little-endian header length, JSON header with dtype, shape and data_offsets, then the raw bytes."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, tensor in tensors.items():
        data = tensor.contiguous().numpy().tobytes()
        header[name] = {"dtype": SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    names = {v: k for k, v in SAFETENSORS_DTYPES.items()}
    out = collections.OrderedDict()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        blob = bytearray(data[8 + n + start : 8 + n + end])
        out[name] = torch.frombuffer(blob, dtype=names[info["dtype"]]).reshape(info["shape"]).clone()
    return out


# ---------------------------------------------------------------------------
# write / verify


def save_trainer_checkpoint(folder, step, seed, weights="safetensors", optimizer=True, scheduler=True, rng=True):
    """checkpoint-N/ in the order Trainer._save_checkpoint writes it: save_model (weights, config.json,
    training_args.bin), then optimizer.pt and scheduler.pt (_save_optimizer_and_scheduler), rng_state.pth,
    and trainer_state.json last. save_only_model=True skips optimizer, scheduler and RNG state."""
    os.makedirs(folder, exist_ok=True)
    model, opt, sched = trained(seed)
    if weights == "safetensors":
        save_safetensors(model.state_dict(), f"{folder}/model.safetensors")
    else:
        torch.save(model.state_dict(), f"{folder}/pytorch_model.bin")
    with open(f"{folder}/config.json", "w") as f:
        json.dump({"architectures": ["TinyModel"], "hidden_size": 16, "model_type": "tiny"}, f, indent=2)
    torch.save(training_args(step), f"{folder}/training_args.bin")
    if optimizer:
        torch.save(opt.state_dict(), f"{folder}/optimizer.pt")
    if scheduler:
        torch.save(sched.state_dict(), f"{folder}/scheduler.pt")
    if rng:
        torch.save(rng_state(seed), f"{folder}/rng_state.pth")
    with open(f"{folder}/trainer_state.json", "w") as f:
        f.write(trainer_state(step))


def save_deepspeed(folder, step, seed, dp=2):
    """What engine.save_checkpoint(folder, tag=f"global_step{step}") writes with ZeRO-2 on dp ranks: the tag
    folder with rank 0's model states and every rank's optimizer shard, then `latest`, then zero_to_fp32.py."""
    tag = f"{folder}/global_step{step}"
    os.makedirs(tag, exist_ok=True)
    torch.save(deepspeed_model_states(seed, step, dp), f"{tag}/mp_rank_00_model_states.pt")
    for rank in range(dp):
        torch.save(deepspeed_optim_states(seed, rank, dp), f"{tag}/zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    with open(f"{folder}/latest", "w") as f:
        f.write(f"global_step{step}")
    with open(f"{folder}/zero_to_fp32.py", "w") as f:
        f.write("# DeepSpeed copies its zero_to_fp32.py converter here\n")


def write(out):
    os.makedirs(out, exist_ok=True)
    os.makedirs(f"{out}/zip")
    torch.save(plain_checkpoint(1, 10), f"{out}/zip/model.pt")
    os.makedirs(f"{out}/legacy")
    torch.save(plain_checkpoint(2, 20), f"{out}/legacy/model.pt", _use_new_zipfile_serialization=False)
    save_deepspeed(f"{out}/deepspeed", 30, 3)
    save_trainer_checkpoint(f"{out}/trainer/checkpoint-40", 40, 4)
    save_trainer_checkpoint(f"{out}/trainer-bin/checkpoint-40", 40, 5, weights="bin")
    return {"written": sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)}


def layouts(out):
    # Layout variants: what the Trainer writes with save_only_model=True, and saves cut short or pruned.
    save_trainer_checkpoint(f"{out}/model-only/checkpoint-50", 50, 6, optimizer=False, scheduler=False,
                            rng=False)
    save_trainer_checkpoint(f"{out}/no-optimizer/checkpoint-50", 50, 6, optimizer=False)
    save_trainer_checkpoint(f"{out}/no-scheduler/checkpoint-50", 50, 6, scheduler=False)
    # With DeepSpeed the Trainer writes no optimizer.pt (the engine keeps the optimizer in global_stepN/),
    # and scheduler.pt only for a scheduler DeepSpeed does not wrap.
    folder = f"{out}/deepspeed-scheduler/checkpoint-50"
    save_trainer_checkpoint(folder, 50, 6, optimizer=False)
    save_deepspeed(folder, 50, 6)
    return {"written": sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)}


def expected(kind, seed, step):
    model, opt, sched = trained(seed)
    return {
        "plain": lambda: plain_checkpoint(seed, step),
        "model": lambda: model.state_dict(),
        "optimizer": lambda: opt.state_dict(),
        "scheduler": lambda: sched.state_dict(),
        "rng": lambda: rng_state(seed),
        "ds-model": lambda: deepspeed_model_states(seed, step, 2),
        "ds-optim-0": lambda: deepspeed_optim_states(seed, 0, 2),
        "ds-optim-1": lambda: deepspeed_optim_states(seed, 1, 2),
        "args": lambda: training_args(step),
        "state": lambda: json.loads(trainer_state(step)),
        "matrix": lambda: {"model": model_state(seed), "step": step},
    }[kind]()


def differences(got, want, where="", out=None):
    """Every place `got` differs from `want` (tensors by dtype, shape and exact values)."""
    out = [] if out is None else out
    if len(out) >= 5:
        return out
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            out.append(f"{where}: {type(got).__name__}, not a tensor")
        elif got.dtype != want.dtype or got.shape != want.shape:
            out.append(f"{where}: {got.dtype}{list(got.shape)}, saved {want.dtype}{list(want.shape)}")
        elif not torch.equal(got, want):
            n = int((got != want).sum()) if got.numel() else 0
            out.append(f"{where}: {n} of {want.numel()} elements differ")
    elif isinstance(want, dict):
        if not isinstance(got, dict):
            out.append(f"{where}: {type(got).__name__}, not a dict")
        elif list(got.keys()) != list(want.keys()):
            out.append(f"{where}: keys {sorted(map(str, set(got) ^ set(want)))} differ")
        else:
            for key in want:
                differences(got[key], want[key], f"{where}[{key!r}]", out)
    elif isinstance(want, (list, tuple)):
        if type(got) is not type(want) or len(got) != len(want):
            out.append(f"{where}: {type(got).__name__} of {len(got) if hasattr(got, '__len__') else '?'}")
        else:
            for i, (a, b) in enumerate(zip(got, want)):
                differences(a, b, f"{where}[{i}]", out)
    elif isinstance(want, argparse.Namespace):
        differences(vars(got) if isinstance(got, argparse.Namespace) else got, vars(want), where, out)
    elif type(want).__module__ == "numpy" or type(got).__module__ == "numpy":
        import numpy as np

        if not np.array_equal(got, want):
            out.append(f"{where}: numpy value differs")
    elif got != want:
        out.append(f"{where}: {got!r:.60}, saved {want!r:.60}")
    return out


def load(path, weights_only):
    if path.endswith(".safetensors"):
        return load_safetensors(path)
    if path.endswith(".json"):
        with open(path) as f:
            return json.load(f)
    return torch.load(path, map_location="cpu", weights_only=weights_only)


def verdict(path, want, weights_only):
    """What torch.load does with a file: raises, loads wrong values (silently), or loads what was saved."""
    try:
        got = load(path, weights_only)
    except Exception as err:  # noqa: BLE001 - whatever torch.load raises is the observation
        return {"outcome": "raises", "exception": type(err).__name__, "message": str(err).splitlines()[0][:300]}
    diffs = differences(got, want)
    return {"outcome": "wrong" if diffs else "correct", "differences": diffs}


def verify(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    results = []
    for item in spec:
        want = expected(item["kind"], item["seed"], item.get("step", 0))
        results.append(verdict(item["path"], want, item.get("weights_only", True)))
    return {"torch_version": torch.__version__, "results": results}


# ---------------------------------------------------------------------------
# matrix: damage real bytes on disk


def zip_entry_data(path, suffix):
    """Offset and length of a stored zip entry's data: its local header's offset from the central directory,
    plus the 30-byte header, the name and the extra field (torch pads data to 64 bytes with the extra field)."""
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(suffix))
        assert info.compress_type == zipfile.ZIP_STORED, info
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        head = f.read(30)
    assert head[:4] == b"PK\x03\x04", head[:4]
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def zip_central_directory(path):
    """[start, end) of the central directory, from the end-of-central-directory record (torch's writer puts a
    zip64 end record and locator, 76 bytes, between the two)."""
    with open(path, "rb") as f:
        data = f.read()
    eocd = data.rfind(b"PK\x05\x06")
    size, offset = struct.unpack("<II", data[eocd + 12 : eocd + 20])
    assert data[offset : offset + 4] == b"PK\x01\x02" and offset + size <= eocd, (offset, size, eocd)
    return offset, offset + size


class _Stub:
    """Stands for any object the legacy main pickle rebuilds: only its persistent ids matter here."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Stub()

    def __setitem__(self, key, value):
        pass

    def __setstate__(self, state):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


class _PersistentIds(pickle.Unpickler):
    """Reads a pickle for its persistent ids (torch's storage references), building nothing else."""

    def __init__(self, f):
        super().__init__(f)
        self.ids = []

    def find_class(self, module, name):
        return type(name, (_Stub,), {})

    def persistent_load(self, pid):
        self.ids.append(pid)
        return _Stub()


def legacy_storages(path):
    """Every storage of a legacy file, as the format lays them out: after the five pickles (magic, protocol,
    sys_info, the object, the storage keys), for each key in the keys' order an 8-byte element count and
    count × element size bytes. Returns {key: (start, end)} of each storage's bytes, and where the pickles end."""
    with open(path, "rb") as f:
        for _ in range(3):
            pickle.load(f)
        walk = _PersistentIds(f)
        walk.load()
        keys = pickle.load(f)
        pickles_end = f.tell()
        types = {pid[2]: pid[1].__name__ for pid in walk.ids if pid[0] == "storage"}
        storages = {}
        for key in keys:
            (count,) = struct.unpack("<q", f.read(8))
            start = f.tell()
            end = start + count * getattr(torch, types[key])().element_size()
            storages[key] = (start, end)
            f.seek(end)
        assert f.read(1) == b"", "bytes after the last storage"
    return storages, pickles_end


def storage_of(path, fmt, tensor):
    """[start, end) of `tensor`'s storage bytes in the file, found through the format's own structure: the zip
    entry `<archive>/data/0`, or the legacy storage whose bytes are the tensor's."""
    raw = tensor.contiguous().numpy().tobytes()
    with open(path, "rb") as f:
        data = f.read()
    if fmt == "zip":
        start, size = zip_entry_data(path, "/data/0")
        assert size == len(raw) and data[start : start + size] == raw, "data/0 is not embed.weight"
        return start, start + size
    storages, pickles_end = legacy_storages(path)
    found = [(start, end) for start, end in storages.values() if data[start:end] == raw]
    assert len(found) == 1 and found[0][0] > pickles_end, found
    return found[0]


def pickle_range(path, fmt):
    """[start, end) of the pickle holding the object: data.pkl's data, or the legacy format's fourth pickle."""
    if fmt == "zip":
        start, size = zip_entry_data(path, "/data.pkl")
        return start, start + size
    with open(path, "rb") as f:
        for _ in range(3):
            pickle.load(f)
        start = f.tell()
        _PersistentIds(f).load()
        return start, f.tell()


DAMAGES = ["flip", "zero-4k", "rename-key", "truncate", "append", "zero-central-directory"]


def damage(path, fmt, kind, original):
    """Damages the file in place; returns what was done, or None when the damage does not apply."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    start, end = storage_of(path, fmt, original["model"]["embed.weight"])
    if kind == "flip":
        at = start + (end - start) // 2 + 3  # the high byte of a float32 in the middle of embed.weight
        data[at] ^= 0x01
        what = f"bit 0 of byte {at} (inside embed.weight's storage, {start}..{end})"
    elif kind == "zero-4k":
        block = (start + 4095) // 4096 * 4096 + 4096
        assert block + 4096 <= end
        data[block : block + 4096] = bytes(4096)
        what = f"bytes {block}..{block + 4096} (a file-system block inside embed.weight's storage) zeroed"
    elif kind == "rename-key":
        p_start, p_end = pickle_range(path, fmt)
        at = data.index(b"embed.weight", p_start, p_end)
        data[at : at + 12] = b"embed.weighs"
        what = f"key 'embed.weight' renamed 'embed.weighs' at byte {at} (pickle {p_start}..{p_end})"
    elif kind == "truncate":
        cut = start + (end - start) // 2
        del data[cut:]
        what = f"cut to {cut} bytes (inside embed.weight's storage)"
    elif kind == "append":
        data += bytes(range(256)) * 16
        what = "4096 bytes appended"
    elif kind == "zero-central-directory":
        if fmt != "zip":
            return None
        cd_start, cd_end = zip_central_directory(path)
        data[cd_start:cd_end] = bytes(cd_end - cd_start)
        what = f"central directory {cd_start}..{cd_end} zeroed"
    with open(path, "wb") as f:
        f.write(data)
    return what


def matrix(out):
    original = {"model": model_state(7), "step": 70}
    cells = []
    for fmt in ["zip", "legacy"]:
        folder = f"{out}/orig-{fmt}"
        os.makedirs(folder)
        torch.save(original, f"{folder}/model.pt", _use_new_zipfile_serialization=(fmt == "zip"))
        clean = verdict(f"{folder}/model.pt", original, True)
        assert clean["outcome"] == "correct", clean
        for kind in DAMAGES:
            cell = f"{fmt}-{kind}"
            os.makedirs(f"{out}/cells/{cell}")
            path = f"{out}/cells/{cell}/model.pt"
            shutil.copyfile(f"{folder}/model.pt", path)
            what = damage(path, fmt, kind, original)
            if what is None:
                shutil.rmtree(f"{out}/cells/{cell}")
                cells.append({"cell": cell, "format": fmt, "damage": kind, "applies": False})
                continue
            cells.append({"cell": cell, "format": fmt, "damage": kind, "applies": True, "what": what,
                          "torch": verdict(path, original, True)})
    return {"torch_version": torch.__version__, "cells": cells}


def main():
    command, arg = sys.argv[1], sys.argv[2]
    result = {"write": write, "layouts": layouts, "verify": verify, "matrix": matrix}[command](arg)
    json.dump(result, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
