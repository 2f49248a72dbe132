"""The Python API as the README shows it: the delay-layer example spikes, and data from
``open_dataset`` meets the model (batch-first, uint8) without manual transposes or casts."""

import re
import warnings
from pathlib import Path

import pytest
import torch

from snn_delays import UserError, build_model, load_config, load_model
from snn_delays.checkpoint import load_checkpoint, save_checkpoint
from snn_delays.config import ConfigError, ModelConfig
from snn_delays.data import open_dataset
from snn_delays.train import train
from _support import tiny

README = Path(__file__).resolve().parents[1] / "README.md"
TINY = tiny({"train.epochs": "1", "train.threads": "1"})


def _readme_code(section: str) -> list[str]:
    text = README.read_text()
    start = text.index(section)
    body = text[start:text.index("\n## ", start + 1)]
    return re.findall(r"```python\n(.*?)```", body, re.S)


def test_readme_delay_layer_example_spikes(capsys):
    exec(_readme_code("## Using the delay layer in your own model")[0], {})
    rates = [float(line.rsplit(" ", 1)[1]) for line in capsys.readouterr().out.splitlines() if "spike rate" in line]
    assert len(rates) == 4 and all(r > 0 for r in rates)
    assert rates == sorted(rates)  # narrower kernels (and rounding) gather input spikes: more output spikes


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("api") / "run"
    train(load_config("synthetic", TINY), d)
    return d


def test_readme_recurrent_example_continues_the_first(capsys):
    first, recurrent = _readme_code("## Using the delay layer in your own model")[:2]
    scope: dict = {}
    exec(first, scope)
    exec(recurrent, scope)
    assert scope["spikes"].shape == (100, 256, 8) and 0 < float(scope["spikes"].detach().mean()) < 1


def test_readme_batching_example_runs(run):
    code = _readme_code("## Using the delay layer in your own model")[2]
    scope: dict = {}
    exec(code.replace('"runs/synthetic"', repr(str(run))), scope)
    assert scope["pred"].shape == (16,) and scope["pred"].dtype == torch.long
    assert 0.0 <= float(scope["accuracy"]) <= 1.0


def _model(steps=None):
    model = build_model(ModelConfig(input_size=140, n_classes=10, hidden_size=8, kernel_size=7, dropout=0.0)).eval()
    model.input_steps = steps
    return model


def test_batch_first_uint8_data_meets_the_model():
    ds = open_dataset("synthetic", split="test", synthetic_test=20)
    assert ds.x.dtype == torch.uint8 and ds.x.shape == (20, ds.n_steps, 140)  # as the datasets hold it
    model = _model(ds.n_steps)
    pred = model.predict(ds.x[:16], batch_first=True)  # uint8, (N, T, C): no cast, no transpose by hand
    manual = model(ds.x[:16].float().transpose(0, 1)).softmax(-1).sum(0).argmax(-1)
    assert pred.shape == (16,) and torch.equal(pred, manual)
    assert torch.equal(model.predict(ds.x[:16].transpose(0, 1)), manual)  # time-major uint8 too
    full = model.predict_dataset(ds, batch_size=7)  # three batches, the last one short
    assert full.shape == (20,) and torch.equal(full[:16], manual)


def test_batch_first_data_passed_as_time_major_is_refused():
    ds = open_dataset("synthetic", split="test", synthetic_test=20)
    model = _model(ds.n_steps)
    with pytest.raises(ValueError, match=r"got \(16, 100, 140\).*batch_first=True"):
        model.predict(ds.x[:16].float())  # was: 100 "predictions", time read as batch
    with pytest.raises(ValueError, match=r"expected input \(B, T, 140\), got \(16, 100, 12\)"):
        model.predict(torch.zeros(16, 100, 12), batch_first=True)
    with pytest.warns(UserWarning, match="input has 50 time steps, the model was trained on 100"):
        assert model.predict(torch.zeros(4, 50, 140), batch_first=True).shape == (4,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _model(None).predict(torch.zeros(50, 4, 140))  # unknown training length: nothing to compare


def test_load_model_knows_the_training_time_length(run, tmp_path):
    from snn_delays.data import open_dataset

    trained = load_model(run)  # the trainer records the training split's length in run_info
    assert trained.input_steps == open_dataset("synthetic", None, "train").n_steps
    ckpt = load_checkpoint(run, "best")
    ckpt["run_info"] = {**(ckpt.get("run_info") or {}), "input_steps": 100}
    save_checkpoint(tmp_path / "b.pt", {k: v for k, v in ckpt.items() if k not in ("format", "format_version")})
    assert load_model(tmp_path / "b.pt").input_steps == 100


@pytest.mark.parametrize("fanin, size", [(1000, "input size"), (141, "input size"), (9, "hidden size")])
def test_fanin_larger_than_a_layer_is_refused(fanin, size):
    cfg = ModelConfig(input_size=140, n_classes=10, hidden_size=8, fanin=fanin)
    with pytest.raises(ConfigError, match=f"model.fanin={fanin} .* {size}"):
        build_model(cfg)
    assert issubclass(ConfigError, UserError)
    build_model(ModelConfig(input_size=140, n_classes=10, hidden_size=8, fanin=8))  # within every layer: fine
