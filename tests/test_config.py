import dataclasses
import math
import tomllib

import pytest

from snn_delays import ConfigError, load_config
from snn_delays.config import (
    RUNTIME_ONLY_KEYS, ExperimentConfig, apply_overrides, config_differences, experiments_dir, named_configs,
    parse_override, result_config, to_toml,
)


def test_named_configs_load():
    for name in ("shd", "ssc", "gsc", "synthetic"):
        cfg = load_config(name)
        assert cfg.model.kernel_size in (25, 31)


def test_overrides_and_types():
    cfg = load_config("shd", ["model.kernel_size=31", "train.lr_delays=0.05", 'data.protocol="paper"'])
    assert cfg.model.kernel_size == 31 and cfg.train.lr_delays == 0.05 and cfg.data.protocol == "paper"
    with pytest.raises(ConfigError, match="model.kernel_size expects an integer"):
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
    with pytest.raises(ConfigError, match="no config named 'no-such-config'.*named configs: .*shd"):
        load_config("no-such-config")


def test_eval_every_is_validated():
    assert load_config("synthetic", ["train.eval_every=3"]).train.eval_every == 3
    with pytest.raises(ConfigError, match="train.eval_every must be >= 1"):
        load_config("synthetic", ["train.eval_every=0"])


# -- names and paths (a file or folder in the current directory never shadows a named config) --

def test_named_config_is_not_shadowed_by_the_current_directory(tmp_path, monkeypatch):
    named = {name: load_config(name) for name in ("shd", "fsdd", "synthetic")}
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fsdd").mkdir()
    (tmp_path / "shd").mkdir()
    (tmp_path / "synthetic").write_text("[model]\nhidden_size = 3\n")  # a stray file, valid TOML
    for name, cfg in named.items():
        assert load_config(name) == cfg


def test_paths_are_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shd").mkdir()
    (tmp_path / "mine").write_text('name = "mine"\n[model]\nhidden_size = 3\n')
    assert load_config("./mine").model.hidden_size == 3
    assert load_config(tmp_path / "mine").name == "mine"  # a path object is always a path
    with pytest.raises(ConfigError, match="is a folder"):
        load_config("./shd")
    with pytest.raises(ConfigError, match=r"no config named 'mine'.*\./mine"):
        load_config("mine")  # a bare name looks only in experiments/, and says how to give the file
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("nowhere.toml")


def test_experiments_env_variable_still_names_the_folder(tmp_path, monkeypatch):
    (tmp_path / "tiny.toml").write_text('name = "tiny"\n[model]\nhidden_size = 5\n')
    monkeypatch.setenv("SNN_DELAYS_EXPERIMENTS", str(tmp_path))
    assert experiments_dir() == tmp_path and named_configs() == ["tiny"]
    assert load_config("tiny").model.hidden_size == 5
    monkeypatch.setenv("SNN_DELAYS_EXPERIMENTS", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="missing does not exist.*SNN_DELAYS_EXPERIMENTS"):
        load_config("tiny")


def test_unreadable_config_files_are_named(tmp_path):
    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing here\n")
    with pytest.raises(ConfigError, match="empty.toml is empty"):
        load_config(empty)
    broken = tmp_path / "broken.toml"
    broken.write_text("[model]\nhidden_size 3\n")
    with pytest.raises(ConfigError, match=r"broken.toml is not valid TOML.*line 2, column"):
        load_config(broken)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)


# -- values, not text (quotes and backslashes reach the config as they are) --

@pytest.mark.parametrize("text", ['a"b', "C:\\data\\new", "x'y", "two\nlines", "tab\there", "del\x7f"])
def test_string_values_survive_toml_round_trip(text, tmp_path):
    cfg = apply_overrides(load_config("synthetic"), {"data.root": text, "data.test_speakers": text})
    p = tmp_path / "c.toml"
    p.write_text(to_toml(cfg))
    assert tomllib.loads(p.read_text())["data"]["root"] == text
    assert load_config(p) == cfg


def test_set_parses_by_the_field_type():
    assert parse_override("data.root=1e3") == ("data.root", "1e3")  # a string field keeps the text
    assert parse_override('data.root="quoted"') == ("data.root", "quoted")
    assert parse_override("data.root=C:\\x") == ("data.root", "C:\\x")
    assert parse_override("train.lr_weights=1e-3") == ("train.lr_weights", 1e-3)
    assert parse_override("train.progress=false") == ("train.progress", False)
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        parse_override("train.epochs")
    with pytest.raises(ConfigError, match="train.progress expects true or false"):
        parse_override("train.progress=maybe")
    with pytest.raises(ConfigError, match=r"did you mean model.kernel_size\?"):
        parse_override("model.kernel_sise=3")


# -- validation --

@pytest.mark.parametrize("override, message", [
    ("train.sigma_final=20.0", "train.sigma_final .* larger than the initial sigma"),
    ("train.sigma_init=2.0", "train.sigma_final .* larger than the initial sigma"),  # with sigma_final 2.5 below
    ("model.threshold=nan", "model.threshold must be a finite number"),
    ("model.threshold=0", "model.threshold must be > 0"),
    ("model.threshold=-1.0", "model.threshold must be > 0"),
    ("train.lr_weights=-0.001", "train.lr_weights must be >= 0"),
    ("train.lr_delays=-1", "train.lr_delays must be >= 0"),
    ("train.one_cycle_pct_start=1.5", "train.one_cycle_pct_start must be in"),
    ('name="two\\nlines"', "name must be one line"),
    ('name=""', "name must not be empty"),
    ("data.synthetic_valid=0", "data.synthetic_valid must be >= 1"),
    ("data.dt_ms=0", "data.dt_ms must be > 0"),
    ('train.device="cuda:x"', "train.device must be auto, cpu, cuda or cuda:N"),
    ("model.extra_steps=-2", "model.extra_steps must be >= 0"),
    ("train.seed=99999999999999999999", "train.seed must be at most 4294967295"),
    ("data.split_seed=4294967296", "data.split_seed must be at most 4294967295"),
    ("data.batch_size=9223372036854775808", "data.batch_size must be at most"),
])
def test_bad_values_are_refused(override, message):
    extra = ["train.sigma_final=2.5"] if override.startswith("train.sigma_init") else []
    with pytest.raises(ConfigError, match=message):
        load_config("synthetic", extra + [override])


def _float_keys() -> list[str]:
    cfg = ExperimentConfig()
    return [f"{s}.{f.name}" for s in ("model", "data", "train") for f in dataclasses.fields(getattr(cfg, s))
            if isinstance(getattr(getattr(cfg, s), f.name), float)]


@pytest.mark.parametrize("key", _float_keys())
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_every_float_field_refuses_nan_and_inf(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + " must be a finite number"):
        load_config("synthetic", {key: value})
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("synthetic", [f"{key}={value}"])  # TOML spells them nan, inf, -inf


def test_sigma_equal_or_decaying_is_fine():
    assert load_config("synthetic", ["train.sigma_init=3.0", "train.sigma_final=3.0"]).train.sigma_final == 3.0
    assert load_config("synthetic", ["model.kernel_size=1"]).model.kernel_size == 1  # no delays, no schedule


def test_runtime_only_keys_do_not_change_the_result_config():
    cfg = load_config("synthetic")
    other = apply_overrides(cfg, {"train.device": "cpu", "data.num_workers": 3, "train.threads": 2,
                                  "train.progress": False})
    assert result_config(other) == result_config(cfg)
    assert config_differences(cfg, other) == ["data.num_workers", "train.device", "train.threads", "train.progress"]
    assert set(config_differences(cfg, other)) <= set(RUNTIME_ONLY_KEYS)
    changed = apply_overrides(cfg, {"train.seed": 5})
    assert result_config(changed) != result_config(cfg) and config_differences(cfg, changed) == ["train.seed"]
