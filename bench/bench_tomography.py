"""CT projector benchmark: ``bip.tomography`` forward + adjoint against scikit-image and ASTRA.

One run, float32, measured side by side: ``projector(parallel_geometry(...), "shear")``
forward + adjoint of a batch, against skimage ``radon`` + unfiltered ``iradon`` looped over
the batch and, when ``import astra`` works (astra-toolbox, a bench-only extra), ASTRA's CPU
``linear`` projector (``create_sino`` + ``create_backprojection`` per image). Sizes: 256x256 /
60 views / batch 8 and 512x512 / 180 views / batch 2. Peak memory of the bip run at 512 is
measured in a fresh subprocess (``resource.getrusage`` max RSS).

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


def _bip(n, views, batch, method="shear"):
    import jax
    import jax.numpy as jnp

    from bip import tomography

    g = tomography.parallel_geometry(
        n, np.linspace(0, 180, views, endpoint=False), dtype=jnp.float32
    )
    op = tomography.projector(g, method)
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


def _astra(n, views, batch):
    try:
        import astra
    except ImportError:
        return None
    vg = astra.create_vol_geom(n, n)
    pg = astra.create_proj_geom(
        "parallel", 1.0, n, np.deg2rad(np.linspace(0, 180, views, endpoint=False))
    )
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


def rows(quick: bool = False) -> list[dict]:
    import warnings

    warnings.filterwarnings("ignore", message="Radon transform")
    repeats = 1 if quick else 3
    out = []
    for n, views, batch in SIZES:
        label = f"CT fwd+adj {n}px/{views}v/batch {batch} f32"
        ours = _best(_bip(n, views, batch), repeats)
        sk = _best(_skimage(n, views, batch), 1)
        out.append(
            {
                "benchmark": label,
                "a": f"bip {1e3 * ours:.0f} ms",
                "b": f"skimage {1e3 * sk:.0f} ms",
                "ratio": round(sk / ours, 1),
                "note": "skimage / bip (radon + unfiltered iradon loop; target >= 10)",
            }
        )
        astra_run = _astra(n, views, batch)
        if astra_run is None:
            note, b, ratio = "astra-toolbox not installed: skipped", "-", None
        else:
            ast = _best(astra_run, repeats)
            note, b, ratio = "ASTRA / bip (CPU linear projector)", f"astra {1e3 * ast:.0f} ms", None
            ratio = round(ast / ours, 1)
        out.append(
            {
                "benchmark": label,
                "a": f"bip {1e3 * ours:.0f} ms",
                "b": b,
                "ratio": ratio,
                "note": note,
            }
        )
    n, views, batch = SIZES[-1]
    peak = _peak_rss_mb(n, views, batch)
    out.append(
        {
            "benchmark": f"CT peak RSS {n}px/{views}v/batch {batch}",
            "a": f"bip {peak:.0f} MB",
            "b": "limit 2048 MB",
            "ratio": round(2048 / peak, 1),
            "note": "whole process (jax runtime included), fresh subprocess",
        }
    )
    return out


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
