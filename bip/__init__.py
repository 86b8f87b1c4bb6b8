"""bip: Bayesian inverse problems with learned score priors.

Data flows one way: prior + likelihood -> posterior drift -> sampler -> samples -> metrics
-> plots. See README.md for a tour.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "arviz",
    "baselines",
    "bessel",
    "calibrate",
    "calibration",
    "cards",
    "check",
    "chains",
    "ct",
    "ctgeometry",
    "ctkernels",
    "ctphantoms",
    "diffusion",
    "ellipses",
    "errors",
    "experiments",
    "hostloop",
    "image_sweeps",
    "images",
    "kernels",
    "laws",
    "likelihoods",
    "linop",
    "manifolds",
    "memory",
    "metrics",
    "networks",
    "notebook",
    "operators",
    "outputs",
    "plots",
    "posteriors",
    "priorfile",
    "priors",
    "problems",
    "profile",
    "recipes",
    "references",
    "samplers",
    "schema",
    "scoreprior",
    "sharding",
    "solve",
    "specs",
    "streaming",
    "sweeps",
    "targets",
    "tomography",
    "train",
    "tv",
)


def __getattr__(name):  # lazy submodules: `import bip; bip.priors.exact(...)` stays cheap
    if name in _SUBMODULES:
        module = importlib.import_module(f"bip.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'bip' has no attribute {name!r}")


__all__ = list(_SUBMODULES) + ["__version__"]
