"""The command line: output folders that never destroy data, checked before any compute;
Ctrl-C that stops within seconds and keeps what was done; the size guard; a fast ``--help``.

The subprocess tests run ``python -m bip.cli`` as a user would (about 5 s each for the JAX
import on a loaded 2-core machine)."""

import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bip import cli, experiments, outputs, problems, recipes, solve
from bip import train as train_mod

CIRCLE_TOY = Path(__file__).resolve().parents[1] / "problems" / "circle-toy.toml"


def _spec(tmp_path, chains=1000, steps=1_000_000, thin=200, name="spec.toml"):
    """The shipped circle toy with other sampler sizes."""
    text = CIRCLE_TOY.read_text()
    for key, value in {"chains": chains, "steps": steps, "thin": thin}.items():
        text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.MULTILINE)
    path = tmp_path / name
    path.write_text(text)
    return path


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(extra)
    return env


def _bip(*args):
    return [sys.executable, "-m", "bip.cli", *map(str, args)]


# --------------------------------------------------------------------------- first contact


def test_help_and_version_do_not_import_jax():
    code = "import bip.cli, sys; assert 'jax' not in sys.modules, 'jax imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bip.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "bip 0.1.0"
    assert time.perf_counter() - start < 3.0  # jax alone takes 2-5 s to import


def test_every_option_has_help_and_global_flags_go_anywhere():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in [("bip", parser), *subparsers.items()]:
        for action in sub._actions:
            assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
    for argv in (["--float32", "solve", "x.toml"], ["solve", "x.toml", "--float32"]):
        assert parser.parse_args(argv).float32 is True
    args = parser.parse_args(["solve", "x.toml", "--no-compile-cache"])
    assert args.float32 is False and args.no_compile_cache is True


def test_spec_type_errors_read_plainly(tmp_path, capsys):
    spec = _spec(tmp_path, chains='"4"')
    assert cli.main(["solve", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f'bip solve: error: {spec}: [sampler] chains: must be an integer, got "4"'


# --------------------------------------------------------------------------- output folders


def test_output_locations_are_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("x")
    for bad, match in [
        (".", "current folder"),
        ("..", "current folder"),
        ("", "empty"),
        ("a-file", "existing file"),
        ("a-file/out", "is a file"),
        ("/sys/bip-out", "cannot write"),  # read-only even for root
    ]:
        with pytest.raises(outputs.OutputError, match=match):
            outputs.check(bad, overwrite=True)
    if os.geteuid() != 0:  # root writes into read-only folders
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.raises(outputs.OutputError, match="cannot write"):
            outputs.check(locked / "out")
    assert outputs.check(tmp_path / "empty-is-fine") == tmp_path / "empty-is-fine"
    (tmp_path / "empty").mkdir()
    assert outputs.check(tmp_path / "empty") == tmp_path / "empty"


def test_overwrite_replaces_only_bip_folders(tmp_path):
    """A folder bip did not write is refused even with --overwrite, and left untouched; a
    bip folder needs --overwrite and is then replaced whole."""
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("years of work")
    with pytest.raises(outputs.OutputError, match="not written by bip"):
        outputs.check(foreign, overwrite=True)
    with pytest.raises(outputs.OutputError, match="not written by bip"):
        outputs.write_folder(foreign, lambda tmp: None, outputs.manifest("solve"), overwrite=True)
    assert [p.name for p in foreign.iterdir()] == ["thesis.txt"]

    ours = tmp_path / "run"
    outputs.write_folder(ours, lambda tmp: (tmp / "a.txt").write_text("1"), outputs.manifest("x"))
    assert outputs.read_manifest(ours)["status"] == "complete"
    with pytest.raises(FileExistsError, match="--overwrite"):
        outputs.check(ours)

    def fill(tmp):
        (tmp / "b.txt").write_text("2")

    outputs.write_folder(ours, fill, outputs.manifest("x", status="incomplete"), overwrite=True)
    assert sorted(p.name for p in ours.iterdir()) == [outputs.MANIFEST, "b.txt"]
    assert outputs.read_manifest(ours)["status"] == "incomplete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "thesis"]  # no temp folders

    # the three files an older bip solve wrote, without a manifest: still bip's
    old = tmp_path / "old-run"
    old.mkdir()
    for name in ("samples.npz", "report.json", "figure.png"):
        (old / name).write_text("")
    with pytest.raises(FileExistsError, match="--overwrite"):
        outputs.check(old, legacy=solve.LEGACY)
    assert outputs.check(old, overwrite=True, legacy=solve.LEGACY) == old
    (old / "thesis.txt").write_text("years of work")
    with pytest.raises(outputs.OutputError, match="not written by bip"):
        outputs.check(old, overwrite=True, legacy=solve.LEGACY)


def test_cli_refuses_bad_out_before_any_compute(tmp_path, monkeypatch, capsys):
    """Each refusal is one line, exit code 2, before the problem is built."""

    def no_compute(*args, **kwargs):
        raise AssertionError("the problem was built before the output was checked")

    monkeypatch.setattr(problems, "build", no_compute)
    monkeypatch.chdir(tmp_path)
    spec = _spec(tmp_path, steps=10, thin=1)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("years of work")
    for out in (".", "", "/sys/bip-out", str(spec), str(foreign)):
        assert cli.main(["solve", str(spec), "--out", out, "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and out in err and "Traceback" not in err
    assert (foreign / "thesis.txt").read_text() == "years of work"


# --------------------------------------------------------------------------- size guard


def test_ten_million_chains_fail_at_once_with_the_estimate(tmp_path):
    """The size guard runs before the problem is built: the whole command, JAX import
    included, takes under 5 s of CPU (the wall time on a loaded machine varies); --float32
    after the command."""
    spec = _spec(tmp_path, chains=10_000_000, steps=100_000, thin=10)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        _bip("solve", spec, "--out", tmp_path / "out", "--float32", "--no-compile-cache"),
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(XDG_CACHE_HOME=str(tmp_path / "cache")),
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    assert done.returncode == 2, done.stderr
    assert "float32" in done.stdout
    err = done.stderr.strip()
    assert "\n" not in err and "Traceback" not in err
    # 10^7 chains x (10^4 draws + 4 state copies) x 2 coordinates x 4 bytes (float32)
    assert "the run would keep about 800.3 GB" in err
    assert "10000000 chains" in err and "sampler.thin" in err
    assert cpu < 5, cpu  # about 1.8 s, nearly all of it importing JAX
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


# --------------------------------------------------------------------------- Ctrl-C


@pytest.mark.slow
def test_ctrl_c_stops_bip_solve_and_keeps_marked_partial_draws(tmp_path):
    """SIGINT mid-sampling: exit 130 within 10 s, one line, no traceback, the draws so far
    in a folder marked incomplete. The run uses the user compilation cache (in tmp)."""
    spec = _spec(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _bip("solve", spec, "--out", out),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(XDG_CACHE_HOME=str(tmp_path / "cache")),
    )
    chunks = []
    reader = threading.Thread(
        target=lambda: chunks.extend(iter(lambda: os.read(proc.stderr.fileno(), 4096), b"")),
        daemon=True,
    )
    reader.start()
    deadline = time.monotonic() + 120
    while b"sampling:" not in b"".join(chunks):  # the progress bar: compiled, sampling
        assert proc.poll() is None and time.monotonic() < deadline, b"".join(chunks)
        time.sleep(0.1)
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    code = proc.wait(timeout=30)
    seconds = time.monotonic() - sent
    reader.join(5)
    err = b"".join(chunks).decode()
    assert code == 130 and seconds < 10, (code, seconds, err)
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("bip")]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("bip solve: interrupted after ")
    assert lines[0].endswith(f"of 1000000 steps; partial results in {out} (marked incomplete)")
    manifest = outputs.read_manifest(out)
    assert manifest["status"] == "incomplete" and manifest["precision"] == "float64"
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is False and report["precision"] == "float64"
    assert 0 < report["steps_done"] < 1_000_000 and report["draws"] >= 1
    with np.load(out / "samples.npz") as data:
        assert data["samples"].shape == (1000, report["draws"], 2)  # (chains, draws, 2)
        assert np.all(np.isfinite(data["samples"]))
    assert not (out / "figure.png").exists()
    assert list((tmp_path / "cache" / "bip" / "jax").iterdir())  # compiled programs cached


def test_ctrl_c_that_the_run_cannot_act_on_still_exits():
    """While XLA compiles (or a chunk runs) Python cannot act on Ctrl-C: the watchdog exits 130
    with one line once the grace period passes without the run saving anything."""
    code = (
        "import signal, time\n"
        "from bip import cli\n"
        "watch = cli._InterruptWatch('solve', grace=1.0)\n"
        "signal.signal(signal.SIGINT, lambda *a: None)  # a run that defers Ctrl-C\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    assert proc.wait(timeout=30) == 130
    assert 1.0 <= time.monotonic() - sent < 10
    assert proc.stderr.read() == "bip solve: interrupted\n"


def test_ctrl_c_in_a_sweep_keeps_the_finished_cells(tmp_path, monkeypatch, capsys):
    exact = experiments._make_exact
    calls, saved = [0], []
    out = tmp_path / "sweep"

    def interrupt_third_cell(*args, **kwargs):
        fn = exact(*args, **kwargs)

        def cell(*a):
            calls[0] += 1
            if calls[0] == 3:  # the two finished cells are on disk already (a forced exit)
                saved.extend(json.loads((out / "results.json").read_text()))
                raise KeyboardInterrupt
            return fn(*a)

        return cell

    monkeypatch.setattr(experiments, "_make_exact", interrupt_third_cell)
    argv = ["robustness", "--out", str(out), "--exact-only", "--alphas", "0", "--no-progress"]
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert err == (
        f"bip robustness: interrupted after 2 of 4 sweep cells; partial results in {out} "
        "(marked incomplete)\n"
    )
    assert outputs.read_manifest(out)["status"] == "incomplete"
    records = json.loads((out / "results.json").read_text())
    assert {r["sigma"] for r in records} == {0.3, 0.2} and records == saved
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["complete"] is False and summary["config"]["cells_done"] == 2
    assert set(summary["eps_star_exact"]["0.0"]) == {"0.3", "0.2"}
    # a second run needs --overwrite, and then writes the complete sweep
    assert cli.main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    calls[0] = -100
    assert cli.main([*argv, "--overwrite"]) == 0
    assert outputs.read_manifest(out)["status"] == "complete"
    assert len(json.loads((out / "results.json").read_text())) == 4 * 25


def test_ctrl_c_in_training_saves_the_checkpoint(tmp_path, monkeypatch, capsys):
    chunk_fn = train_mod._chunk_fn

    def interrupt_second_chunk(*args, **kwargs):
        tx, run_chunk = chunk_fn(*args, **kwargs)
        calls = [0]

        def chunk(*a):
            calls[0] += 1
            if calls[0] == 2:
                raise KeyboardInterrupt
            return run_chunk(*a)

        return tx, chunk

    monkeypatch.setattr(train_mod, "_chunk_fn", interrupt_second_chunk)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(recipes.recipe_to_toml(recipes.load_recipe(TINY_RECIPE)))
    out = tmp_path / "prior"
    argv = ["train", str(recipe), "--out", str(out), "--no-progress", "--no-eval"]
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert err == (
        f"bip train: interrupted at step 10 of 20; checkpoint in {out / 'checkpoint.npz'} "
        "(run the same command again to resume)\n"
    )
    manifest = outputs.read_manifest(out)
    assert manifest["status"] == "incomplete" and manifest["steps_done"] == 10
    monkeypatch.setattr(train_mod, "_chunk_fn", chunk_fn)
    assert cli.main(argv) == 0
    manifest = outputs.read_manifest(out)
    assert manifest["status"] == "complete" and manifest["steps_done"] == 20
    # a folder that is not a training run is refused
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("x")
    assert cli.main(["train", str(recipe), "--out", str(foreign), "--no-progress"]) == 2
    assert "not written by bip" in capsys.readouterr().err


TINY_RECIPE = {
    "name": "tiny-cli",
    "seed": 3,
    "data": {"source": "circle", "law": "vonmises", "kappa": 1.0},
    "net": {"width": 8, "depth": 1, "num_frequencies": 2, "sigma_data": 0.7},
    "training": {"steps": 20, "batch": 16, "warmup": 2, "chunk": 10, "checkpoint_every": 10},
}
