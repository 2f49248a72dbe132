import pytest

from snn_delays import ConfigError, load_config
from snn_delays.config import to_toml


def test_named_configs_load():
    for name in ("shd", "ssc", "gsc", "synthetic"):
        cfg = load_config(name)
        assert cfg.model.kernel_size in (25, 31)


def test_overrides_and_types():
    cfg = load_config("shd", ["model.kernel_size=31", "train.lr_delays=0.05", 'data.protocol="paper"'])
    assert cfg.model.kernel_size == 31 and cfg.train.lr_delays == 0.05 and cfg.data.protocol == "paper"
    with pytest.raises(ConfigError, match="model.kernel_size expects a value of type int"):
        load_config("shd", ["model.kernel_size=abc"])


def test_unknown_key_lists_valid_ones():
    with pytest.raises(ConfigError) as e:
        load_config("shd", ["model.kernel_sise=31"])
    assert "kernel_size" in str(e.value) and "hidden_size" in str(e.value)
    with pytest.raises(ConfigError, match="valid keys"):
        load_config("shd", ["foo=1"])


def test_unknown_key_in_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[model]\nkernel_sise = 3\n")
    with pytest.raises(ConfigError, match="bad.toml.*kernel_sise.*valid keys of \\[model\\]"):
        load_config(p)


def test_toml_round_trip(tmp_path):
    cfg = load_config("ssc", ["train.epochs=3"])
    p = tmp_path / "c.toml"
    p.write_text(to_toml(cfg))
    assert load_config(p) == cfg


def test_invalid_values_rejected():
    with pytest.raises(ConfigError, match="variant"):
        load_config("shd", ['model.variant="magic"'])
    with pytest.raises(ConfigError, match="no config named 'no-such-config'; known names: .*shd"):
        load_config("no-such-config")


def test_eval_every_is_validated():
    assert load_config("synthetic", ["train.eval_every=3"]).train.eval_every == 3
    with pytest.raises(ConfigError, match="train.eval_every must be >= 1"):
        load_config("synthetic", ["train.eval_every=0"])
