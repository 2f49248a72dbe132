"""Data-parallel training (DDP, gloo on CPU, two processes) gives the result of one process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from snn_delays import load_config
from snn_delays.distributed import DistContext, GlobalBatchNorm1d, convert_for_ddp
from snn_delays.model import TimeSharedDropout
from snn_delays.train import train

from _support import tiny

TINY = tiny({"data.synthetic_train": "91", "data.synthetic_valid": "40", "data.synthetic_test": "40",
    "train.epochs": "2", "train.threads": "1", "model.dropout": "0.3", "train.device": '"cpu"'})
# 91 samples in batches of 30: the last batch (1 sample) leaves rank 1 with an empty shard

_WORKER = """
import sys, torch
torch.set_num_threads(1)
from snn_delays import load_config
from snn_delays.train import train
train(load_config("synthetic", sys.argv[2:]), sys.argv[1])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_gloo_processes_match_one_process(tmp_path):
    cfg = load_config("synthetic", TINY)
    single = tmp_path / "single"
    train(cfg, single)

    ddp = tmp_path / "ddp"
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", _WORKER, str(ddp), *TINY], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(outs)

    a, b = _metrics(single), _metrics(ddp)
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-4, abs=1e-6)
        for key in ("train_acc", "valid_acc", "test_acc", "sigma", "lr_weights", "lr_delays"):
            assert rb[key] == pytest.approx(ra[key], abs=1e-9), key
        for key in [k for k in ra if k.startswith("delay_mean")]:
            assert rb[key] == pytest.approx(ra[key], abs=1e-4), key
    sa = torch.load(single / "last.pt", weights_only=True)["model"]
    sb = torch.load(ddp / "last.pt", weights_only=True)["model"]
    assert sa.keys() == sb.keys()  # the DDP modules keep the checkpoint format
    for k in sa:
        assert torch.allclose(sa[k].float(), sb[k].float(), rtol=1e-4, atol=1e-5), k
    summary = json.loads((ddp / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["seed"] == cfg.train.seed


def test_shard_covers_the_batch_once():
    x, y = torch.zeros(3, 7, 2), torch.arange(7)
    parts = [DistContext(rank=r, world=3).shard(x, y) for r in range(3)]
    assert torch.cat([p[1] for p in parts]).tolist() == list(range(7))
    assert [p[2] for p in parts] == [0, 3, 5] and all(p[3] == 7 for p in parts)
    assert DistContext().shard(x, y)[1] is y


def test_converted_modules_equal_originals_without_process_group():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm1d(5)
    g = GlobalBatchNorm1d.from_batchnorm(bn)
    x = torch.randn(30, 5)
    assert torch.allclose(bn(x), g(x)) and torch.allclose(bn.running_var, g.running_var)
    assert g.state_dict().keys() == bn.state_dict().keys()
    d = TimeSharedDropout(0.5)
    torch.manual_seed(1)
    full = torch.empty(1, 6, 4).bernoulli_(0.5) / 0.5
    torch.manual_seed(1)
    assert torch.equal(d(torch.ones(3, 2, 4), rows=(2, 6)), full[:, 2:4].expand(3, 2, 4))  # rows 2, 3 of 6
    torch.manual_seed(1)
    assert torch.equal(d(torch.ones(3, 6, 4)), full.expand(3, 6, 4))  # the whole batch: the same masks
    torch.manual_seed(1)
    assert torch.equal(d(torch.ones(3, 4, 2), channel_major=True, rows=(2, 6)),
                       full[:, 2:4].permute(0, 2, 1).expand(3, 4, 2))

    from snn_delays.model import build_model

    m = build_model(load_config("synthetic", TINY))
    keys = m.state_dict().keys()
    convert_for_ddp(m)
    assert m.state_dict().keys() == keys
    assert any(isinstance(mod, GlobalBatchNorm1d) for mod in m.modules())
