"""The wheel ships the trained priors and the problem specs, and they load from an install.

``priors/`` and ``problems/`` live at the repository root; ``pyproject.toml`` maps them into
the wheel as ``bip/_data/priors`` and ``bip/_data/problems`` and ``bip._data.shipped`` finds
them. The slow test builds the wheel offline (``--no-build-isolation``: the environment's
setuptools, no download), installs it into a fresh virtualenv that reuses this environment's
dependencies through a ``.pth`` file, and from a folder outside the repository loads every
shipped prior (sha256-checked) and a shipped spec by name, and runs the installed ``bip``
script. Measured on 2 shared cores: build 1 s, install 1 s, checks ~6 s CPU (15-25 s wall
under load).
"""

import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from bip import _data, priorfile, problems

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "bip", "priors", "problems")
PRIOR_FILES = ("README.md", "model.json", "recipe.toml", "weights.safetensors")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (no stale ``build/`` from the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    dist = tmp_path_factory.mktemp("dist")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    result = subprocess.run(
        [*build, "--no-index", "-q", "-w", str(dist), str(src)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    (path,) = dist.glob("bip_scores-*.whl")
    return path


def test_shipped_data_is_found_in_the_checkout():
    assert sorted(priorfile.available_priors()) == sorted(
        p.name for p in (REPO / "priors").iterdir() if (p / "model.json").is_file()
    )
    assert len(priorfile.available_priors()) == 5
    assert problems.available_problems() == sorted(
        p.stem for p in (REPO / "problems").glob("*.toml")
    )
    with pytest.raises(ValueError, match="unknown shipped data 'weights'"):
        _data.shipped("weights")


def test_a_spec_loads_by_name_and_a_file_path_wins(tmp_path, monkeypatch):
    by_path = problems.load(REPO / "problems" / "ct-phantom-16.toml")
    for name in ("ct-phantom-16", "ct-phantom-16.toml"):
        by_name = problems.load(name)
        assert Path(by_name.pop("_path")).samefile(by_path["_path"])
        assert by_name == {k: v for k, v in by_path.items() if k != "_path"}
    monkeypatch.chdir(tmp_path)  # a file of that name in the working folder is the user's own
    text = (REPO / "problems" / "circle-toy.toml").read_text()
    Path("circle-toy.toml").write_text(text.replace('name = "circle-toy"', 'name = "mine"'))
    assert problems.load("circle-toy.toml")["name"] == "mine"
    assert problems.load("circle-toy")["name"] == "circle-toy"
    with pytest.raises(
        FileNotFoundError, match="'ct-phantom-99'.*shipped spec name.*ct-phantom-16"
    ):
        problems.load("ct-phantom-99")
    with pytest.raises(FileNotFoundError, match="'sub/ct-phantom-16'"):
        problems.load("sub/ct-phantom-16")  # a path is never looked up among the shipped specs


def test_wheel_holds_the_modules_data_and_metadata(wheel):
    with zipfile.ZipFile(wheel) as zf:
        files = {info.filename: info for info in zf.infolist()}
        content = {name: zf.read(name) for name in files if not name.endswith(".py")}
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "bip").rglob("*.py")}
    assert modules <= set(files), f"modules missing from the wheel: {modules - set(files)}"
    expected = {f"bip/_data/problems/{p.name}" for p in (REPO / "problems").glob("*.toml")}
    expected.add("bip/_data/priors/README.md")
    for name in priorfile.available_priors():
        expected |= {f"bip/_data/priors/{name}/{f}" for f in PRIOR_FILES}
        if (REPO / "priors" / name / "samples.png").is_file():
            expected.add(f"bip/_data/priors/{name}/samples.png")
    # a prior still in training ships its recipe only (available_priors() leaves it out)
    for folder in (REPO / "priors").iterdir():
        if folder.is_dir() and not (folder / "model.json").is_file():
            expected.add(f"bip/_data/priors/{folder.name}/recipe.toml")
    for name in expected:
        wheel_name = name.replace("bip/_data/", "")
        assert _sha256(content[name]) == _sha256((REPO / wheel_name).read_bytes()), name
    info = "bip_scores-0.1.0.dist-info/"
    others = set(files) - modules - expected - {info + f for f in ("METADATA", "WHEEL", "RECORD")}
    assert others == {info + "entry_points.txt", info + "top_level.txt", info + "licenses/LICENSE"}
    assert sum(i.file_size for i in files.values()) < 12e6  # 10.3 MB (ellipses128-unet: 4.2 MB)
    assert max(i.file_size for i in files.values()) < 5e6  # the largest: ellipses128 weights

    meta = content[info + "METADATA"].decode()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "License-Expression: MIT" in meta and "License-File: LICENSE" in meta
    assert f"Requires-Python: {project['requires-python']}" in meta
    for dep in project["dependencies"]:
        assert f"Requires-Dist: {dep}\n" in meta, dep
    for extra in ("test", "notebooks"):
        assert f"Provides-Extra: {extra}\n" in meta
    assert "bip = bip.cli:main" in content[info + "entry_points.txt"].decode()


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_loads_every_prior_and_a_spec_by_name(wheel, tmp_path):
    venv, cwd = tmp_path / "venv", tmp_path / "elsewhere"
    cwd.mkdir()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    purelib = Path(subprocess.check_output([str(python), "-c", where], text=True).strip())
    # offline: the new venv sees this environment's packages (not its bip: editable finders
    # are installed by .pth files, which a .pth-added folder does not run)
    (purelib / "_bip_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    install = [str(python), "-m", "pip", "install", "--no-deps", "--no-index"]
    result = subprocess.run(
        [*install, "--ignore-installed", "-q", str(wheel)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr

    script = """
import json, bip, bip.priorfile, bip.priors, bip.problems
names = bip.priorfile.available_priors()
loaded = {name: bip.priors.load(name).name for name in names}  # sha256-checked
spec = bip.problems.load("ct-phantom-16")
print(json.dumps(dict(bip=bip.__file__, priors_dir=str(bip.priorfile.PRIORS_DIR), loaded=loaded,
                      spec=spec["_path"], views=spec["operator"]["views"])))
"""
    result = subprocess.run(
        [str(python), "-c", script], cwd=cwd, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(out["bip"]).is_relative_to(purelib), out["bip"]  # the wheel's bip, not the repo's
    assert Path(out["priors_dir"]) == purelib / "bip" / "_data" / "priors"
    assert sorted(out["loaded"]) == sorted(priorfile.available_priors())
    assert Path(out["spec"]) == purelib / "bip" / "_data" / "problems" / "ct-phantom-16.toml"
    assert out["views"] == 16

    # the installed script resolves spec names in the wheel (an unknown one is refused with the
    # shipped list, before any compute; tests/test_problems.py solves the specs themselves)
    bip_script = venv / "bin" / "bip"
    assert bip_script.read_text().startswith(f"#!{python}")
    unknown = [str(bip_script), "solve", "ct-phantom-99"]
    result = subprocess.run(unknown, cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 2, result.stderr
    assert "'ct-phantom-99' does not exist" in result.stderr
    assert ", ".join(problems.available_problems()) in result.stderr
    assert not (cwd / "runs").exists()
