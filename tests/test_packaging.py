"""The wheel works away from the checkout: built, installed without ``-e`` into a folder of its own,
and run from another folder with the checkout off ``sys.path``.

The build runs on a copy of the build inputs (so no ``build/`` or ``*.egg-info`` lands in the
checkout) with this interpreter's setuptools (``--no-build-isolation``: no network). The installed
copy reuses this environment's torch, numpy, ... (``pip install --no-deps --target``), which is what
a fresh environment with the declared dependencies would hold.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from snn_delays._optional import EXTRAS, require
from snn_delays.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "snn_delays", "neuromorphic_export", "experiments")
TOP_LEVEL = {"snn_delays", "neuromorphic_export"}

pytestmark = pytest.mark.timeout(300)


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_INPUTS:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(p, src / name)
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
          "--no-build-isolation", "--no-index", "-w", str(out), str(src)])
    (whl,) = out.glob("snn_delays-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel installed (not editable) into a folder of its own: put it on PYTHONPATH to use it."""
    site = tmp_path_factory.mktemp("site")
    _run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "--no-index",
          "--target", str(site), str(wheel)])
    return site


def _elsewhere_env(site: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SNN_DELAYS_EXPERIMENTS", None)
    env["PYTHONPATH"] = str(site)  # before site-packages, where the editable install points at the checkout
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_wheel_holds_the_two_packages_and_the_named_configs(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == TOP_LEVEL
    configs = {n for n in names if n.startswith("snn_delays/experiments/")}
    assert configs == {f"snn_delays/experiments/{p.name}" for p in (ROOT / "experiments").glob("*.toml")}
    assert "snn_delays/experiments/shd.toml" in configs
    sources = {p.relative_to(ROOT).as_posix() for pkg in TOP_LEVEL for p in (ROOT / pkg).rglob("*.py")
               if "__pycache__" not in p.parts}
    assert sources <= set(names), f"not in the wheel (a folder without __init__.py?): {sorted(sources - set(names))}"


def test_installed_wheel_builds_named_configs_away_from_the_checkout(installed, tmp_path):
    code = """
import json, pathlib, sys
import neuromorphic_export, snn_delays, snn_delays.cli.bench
from snn_delays.config import experiments_dir
site, root = pathlib.Path(sys.argv[1]).resolve(), pathlib.Path(sys.argv[2]).resolve()
files = [pathlib.Path(m.__file__).resolve() for m in (snn_delays, neuromorphic_export, snn_delays.cli.bench)]
assert all(f.is_relative_to(site) for f in files), files
assert not any(pathlib.Path(p or ".").resolve() == root for p in sys.path), sys.path
model = snn_delays.build_model("shd")
print(json.dumps({"params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                  "experiments": str(experiments_dir())}))
"""
    out = _run([sys.executable, "-c", code, str(installed), str(ROOT)], cwd=tmp_path, env=_elsewhere_env(installed))
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["params"] == 214_016
    assert Path(got["experiments"]).resolve() == (installed / "snn_delays" / "experiments").resolve()


def test_installed_command_trains_synthetic_from_another_folder(installed, tmp_path):
    script = installed / "bin" / "snn-delays"  # the console script the wheel declares
    assert script.exists()
    small = ["model.hidden_size=16", "data.synthetic_train=128", "data.synthetic_valid=64", "data.synthetic_test=64",
             "data.batch_size=64", "train.threads=1", "train.progress=false"]
    cmd = [sys.executable, str(script), "train", "--dataset", "synthetic", "--epochs", "1", "--out", "run"]
    for s in small:
        cmd += ["--set", s]
    _run(cmd, cwd=tmp_path, env=_elsewhere_env(installed))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary  # the run finished and wrote its result
    assert (tmp_path / "run" / "best.pt").exists() and (tmp_path / "run" / "config.toml").exists()


@pytest.mark.parametrize("module", sorted(EXTRAS))
def test_missing_extra_names_the_pip_install(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail as if not installed
    with pytest.raises(UserError, match=rf"pip install 'snn-delays\[{EXTRAS[module]}\]'") as e:
        require(module, "this command")
    assert "\n" not in str(e.value)


def test_missing_import_inside_an_installed_extra_is_not_hidden(monkeypatch):
    """Only the extra's own absence becomes the one-line hint; a broken dependency of it stays visible."""
    import importlib

    def broken(name, *a, **kw):
        raise ModuleNotFoundError("No module named 'libfoo'", name="libfoo")

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError):
        require("matplotlib", "this command")
