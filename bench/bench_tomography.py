"""CT projector benchmark: ``bip.tomography`` forward + adjoint against scikit-image and ASTRA.

One run, float32, measured side by side: ``projector(parallel_geometry(...), "shear")``
forward + adjoint of a batch, against skimage ``radon`` + unfiltered ``iradon`` looped over
the batch and, when ``import astra`` works (astra-toolbox, a bench-only extra), ASTRA's CPU
``linear`` projector (``create_sino`` + ``create_backprojection`` per image). Sizes: 256x256 /
60 views / batch 8 and 512x512 / 180 views / batch 2. Fan beam (flat detector, source and
detector at 2n from the axis, 2n bins): ``"joseph"`` at 256x256 / 60 views / batch 8 against
ASTRA's ``line_fanflat``. Peak memory of the bip run at 512 is measured in a fresh
subprocess (``resource.getrusage`` max RSS).

    python -m bench.bench_tomography            # prints the rows
    python -m bench.bench_tomography --json out.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZES = [(256, 60, 8), (512, 180, 2)]


def _best(f, repeats: int) -> float:
    f()  # compile / warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def _bip(n, views, batch, fan=False):
    import jax
    import jax.numpy as jnp

    from bip import tomography

    if fan:
        angles = np.linspace(0, 360, views, endpoint=False)
        g = tomography.fan_geometry(n, angles, 2.0 * n, 2.0 * n, 2 * n, 1.0, dtype=jnp.float32)
    else:
        angles = np.linspace(0, 180, views, endpoint=False)
        g = tomography.parallel_geometry(n, angles, dtype=jnp.float32)
    op = tomography.projector(g)
    x = jnp.asarray(np.random.default_rng(0).random((batch, n, n)), jnp.float32)

    def run():
        jax.block_until_ready(op.adjoint(op(x)))

    return run


def _skimage(n, views, batch):
    from skimage.transform import iradon, radon

    theta = np.linspace(0, 180, views, endpoint=False)
    x = np.random.default_rng(0).random((batch, n, n)).astype(np.float32)

    def run():
        for img in x:
            iradon(radon(img, theta, circle=True), theta, circle=True, filter_name=None)

    return run


def _astra(n, views, batch, fan=False):
    try:
        import astra
    except ImportError:
        return None
    vg = astra.create_vol_geom(n, n)
    if fan:
        radians = np.deg2rad(np.linspace(0, 360, views, endpoint=False))
        pg = astra.create_proj_geom("fanflat", 1.0, 2 * n, radians, 2.0 * n, 2.0 * n)
        pid = astra.create_projector("line_fanflat", pg, vg)
    else:
        radians = np.deg2rad(np.linspace(0, 180, views, endpoint=False))
        pg = astra.create_proj_geom("parallel", 1.0, n, radians)
        pid = astra.create_projector("linear", pg, vg)
    x = np.random.default_rng(0).random((batch, n, n)).astype(np.float32)

    def run():
        for img in x:
            sid, sino = astra.create_sino(img, pid)
            bid, _ = astra.create_backprojection(sino, pid)
            astra.data2d.delete([sid, bid])

    return run


def _peak_rss_mb(n, views, batch) -> float:
    """Max RSS (MB) of a fresh process that runs bip's forward + adjoint once."""
    code = (
        "import resource, sys; sys.path.insert(0, '.');"
        "from bench.bench_tomography import _bip;"
        f"_bip({n}, {views}, {batch})();"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024  # Linux: kilobytes


def _row(label, seconds, b, ratio, note) -> dict:
    return {
        "benchmark": label,
        "a": f"bip {1e3 * seconds:.0f} ms",
        "b": b,
        "ratio": ratio,
        "note": note,
    }


def rows(quick: bool = False) -> list[dict]:
    import warnings

    warnings.filterwarnings("ignore", message="Radon transform")
    repeats = 1 if quick else 3
    out = []
    for n, views, batch in SIZES:
        label = f"CT fwd+adj {n}px/{views}v/batch {batch} f32"
        ours = _best(_bip(n, views, batch), repeats)
        sk = _best(_skimage(n, views, batch), 1)
        note = "skimage / bip (radon + unfiltered iradon loop; target >= 10)"
        out.append(_row(label, ours, f"skimage {1e3 * sk:.0f} ms", round(sk / ours, 1), note))
        out.append(_astra_row(label, ours, _astra(n, views, batch), repeats, "linear"))
    n, views, batch = 256, 60, 8
    label = f"CT fan fwd+adj {n}px/{views}v/batch {batch} f32"
    ours = _best(_bip(n, views, batch, fan=True), repeats)
    out.append(_astra_row(label, ours, _astra(n, views, batch, fan=True), repeats, "line_fanflat"))
    n, views, batch = SIZES[-1]
    peak = _peak_rss_mb(n, views, batch)
    note = "whole process (jax runtime included), fresh subprocess"
    out.append(
        {
            "benchmark": f"CT peak RSS {n}px/{views}v/batch {batch}",
            "a": f"bip {peak:.0f} MB",
            "b": "limit 2048 MB",
            "ratio": round(2048 / peak, 1),
            "note": note,
        }
    )
    return out


def _astra_row(label, ours, astra_run, repeats, projector) -> dict:
    if astra_run is None:
        return _row(label, ours, "-", None, "astra-toolbox not installed: skipped")
    ast = _best(astra_run, repeats)
    note = f"ASTRA / bip (ASTRA's CPU {projector} projector)"
    return _row(label, ours, f"astra {1e3 * ast:.0f} ms", round(ast / ours, 1), note)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    result = rows(args.quick)
    if args.json:
        Path(args.json).write_text(json.dumps(result))
    for row in result:
        print(row)
    return result


if __name__ == "__main__":
    main()
