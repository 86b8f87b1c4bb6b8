"""The measured quality of a trained score prior and its model card (``README.md``).

``evaluate`` measures what goes into ``model.json``'s ``quality``: the score-error profile
against the exact score where one exists (toys; the exact-chart phantom prior), for von Mises
toys paper Fig. 2 with the network (TS-1 versus standard Langevin), and for images the
distance to the manifold of Langevin samples (phantoms) and reverse-diffusion samples with
their nearest-training-image distances. ``model_card_markdown`` renders a card as Markdown;
``write`` stores ``model.json`` and ``README.md`` in a prior folder; ``evaluate_folder``
(``bip train ... --eval-only``) measures a trained folder again and rewrites both.

Example:
    >>> card = bip.cards.evaluate_folder("runs/circle")      # a folder bip train wrote
    >>> card["quality"]["rel_error_at_0.1"]
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bip import images, networks, outputs, plots, priorfile, priors, profile
from bip.recipes import Recipe, build_law, load_recipe, training_images
from bip.scoreprior import ScorePrior
from bip.specs import IMAGE_SOURCES, TrainingSpec

EVAL_SIGMAS = tuple(float(s) for s in np.geomspace(0.01, 1.0, 9))
QUALITY_SIGMA = 0.1


def _profile_summary(prof: Mapping[str, Any], reference: str) -> dict[str, Any]:
    i = int(np.argmin(np.abs(prof["sigmas"] - QUALITY_SIGMA)))
    return {
        "rel_error_at_0.1": float(prof["rel_error"][i]),
        "num_samples": prof["num_samples"],
        "profile": {
            "reference": reference,
            "sigmas": [float(s) for s in prof["sigmas"]],
            "rel_error": [float(v) for v in prof["rel_error"]],
            "abs_error": [float(v) for v in prof["abs_error"]],
            "beta": prof["beta"],
            "alpha_range": list(prof["alpha_range"]) if prof["alpha_range"] else None,
        },
    }


TOY_LANGEVIN = dict(sigma=0.01, ts_chains=4000, ts_steps=4000, std_chains=2000, std_steps=10_000)
"""Sizes of the Fig. 2 check in the card of a von Mises prior on a circle or an ellipse."""

PHANTOM_EVAL_SIGMAS = tuple(float(s) for s in np.geomspace(0.01, 0.1, 5))
"""Sigmas of the phantom profile: where the exact-chart (Laplace) reference is accurate."""

IMAGE_EVAL = dict(num_samples=64, num_levels=500, profile_samples=256, nn_baseline=256)
"""Sizes of the image-prior evaluation (reverse-diffusion samples, profile, baselines)."""

TWEEDIE_REFERENCE = "the exact score of p_sigma, through the denoising loss (Tweedie)"
"""The profile's reference for laws without an exact score (``denoising_error_profile``)."""

LOCAL_CHART_CHAINS = 16
"""Chains of the distance check where each distance is a Gauss-Newton fit (random ellipses:
about 1 CPU-s per 128x128 image)."""


def evaluate(prior: ScorePrior, law, recipe: Recipe) -> dict[str, Any]:
    """The measured quality of a trained prior that goes into ``model.json``'s ``quality``.

    Toys: the score-error profile against ``bip.priors.exact(law)`` at ``EVAL_SIGMAS``
    (4096 points per sigma), and for von Mises laws the Fig. 2 Langevin check
    (``TOY_LANGEVIN``). Images (``IMAGE_EVAL``): the phantom profile at
    ``PHANTOM_EVAL_SIGMAS`` and the manifold distance of tempered-Langevin samples, and
    reverse-diffusion samples against the training images. Keys follow ``recipe.seed``.

    Example:
        >>> recipe = bip.recipes.load_recipe("priors/circle-vonmises/recipe.toml")
        >>> law = bip.recipes.build_law(recipe)
        >>> quality = evaluate(bip.networks.load_prior("circle-vonmises"), law, recipe)
        >>> quality["rel_error_at_0.1"]          # 0.032 in the shipped card (4096 points)
    """
    seed = recipe.seed
    if recipe.data.source in IMAGE_SOURCES:
        return _evaluate_images(prior, law, recipe)
    reference = priors.exact(law)
    prof = profile.score_error_profile(
        jax.random.key(seed + 1), prior, reference, law, np.asarray(EVAL_SIGMAS), 4096
    )
    quality = _profile_summary(prof, "bip.priors.exact(law)")
    if recipe.data.law == "vonmises":  # paper Fig. 2: TS-1 versus standard Langevin
        quality["langevin"] = profile.toy_langevin_check(
            jax.random.key(seed + 2), prior, law, **TOY_LANGEVIN
        )
    return quality


def _quantiles(values) -> dict[str, float]:
    v = np.asarray(values, float)
    return {
        "mean": float(np.mean(v)),
        "min": float(np.min(v)),
        "q05": float(np.quantile(v, 0.05)),
        "median": float(np.median(v)),
        "q95": float(np.quantile(v, 0.95)),
    }


NN_TRAINING_MAX = 200_000
"""At most this many training draws (the first, in training order) enter the nearest-neighbour
check of a fresh-draw law: they are regenerated, which past this many 128x128 draws would cost
more than the rest of the evaluation; every shipped card is below it (ellipses128-unet: 192,000
draws) and compares with all of its draws."""


def _training_draws(recipe: Recipe, law) -> tuple[Any, int]:
    """The training images of the nearest-neighbour check (chunks; at most
    ``NN_TRAINING_MAX`` of a fresh-draw law) and their number."""
    draws = training_images(recipe, law)
    if isinstance(law, images.EmpiricalLaw):
        return draws, law.num_examples
    per_chunk = 50 * recipe.training.batch  # training_images' default chunk of 50 steps
    total = recipe.training.steps * recipe.training.batch
    chunks = -(-min(total, NN_TRAINING_MAX) // per_chunk)
    return itertools.islice(draws, chunks), min(total, chunks * per_chunk)


def _evaluate_images(prior: ScorePrior, law, recipe: Recipe) -> dict[str, Any]:
    key = jax.random.key(recipe.seed + 1)
    t = recipe.training
    quality: dict[str, Any] = {}
    phantom = isinstance(law, images.PhantomLaw)
    if phantom:
        prof = profile.score_error_profile(
            key,
            prior,
            priors.exact(law),
            law,
            np.asarray(PHANTOM_EVAL_SIGMAS),
            IMAGE_EVAL["profile_samples"],
        )
        quality.update(
            _profile_summary(prof, "bip.priors.exact(PhantomLaw) (Laplace, exact chart)")
        )
        quality["manifold_distance"] = profile.manifold_distance_check(
            jax.random.fold_in(key, 1), prior, law
        )
    elif hasattr(law, "local_manifold"):  # a random number of ellipses: no exact score
        prof = profile.denoising_error_profile(
            key, prior, law, np.asarray(PHANTOM_EVAL_SIGMAS), IMAGE_EVAL["profile_samples"]
        )
        quality.update(_profile_summary(prof, TWEEDIE_REFERENCE))
        quality["profile"]["floor_fraction"] = [float(v) for v in prof["floor_fraction"]]
        quality["manifold_distance"] = profile.manifold_distance_check(
            jax.random.fold_in(key, 1), prior, law, num_chains=LOCAL_CHART_CHAINS
        )
        quality["manifold_distance"]["manifold"] = (
            "images of the same ellipses near each start (`LocalEllipseChart.distance`, "
            "Gauss-Newton from the start's table: an upper bound on the distance to the law's "
            "support)"
        )
    num = IMAGE_EVAL["num_samples"]
    raw, samples = profile.diffusion_samples(
        jax.random.fold_in(key, 2),
        prior,
        num,
        sigma_max=t.sigma_max,
        sigma_min=t.sigma_min,
        num_levels=IMAGE_EVAL["num_levels"],
    )
    train_draws, num_train = _training_draws(recipe, law)
    if not isinstance(law, images.EmpiricalLaw):  # a generative law: fresh draws every step
        held_out = law.sample(jax.random.fold_in(key, 3), (IMAGE_EVAL["nn_baseline"],))
        both = profile.nearest_distances(jnp.concatenate([samples, held_out]), train_draws)
        nn, baseline = both[:num], both[num:]  # one pass over the regenerated draws
        baseline_what = "fresh draws of the law to the training draws"
    else:
        nn = profile.nearest_distances(samples, train_draws)
        baseline = profile.nearest_distances(law.data, law.data, exclude_self=True)
        baseline_what = "each training image to the others (leave-one-out)"
    norms = np.sqrt(np.sum(np.asarray(samples, float) ** 2, axis=(-2, -1)))
    entry = {
        "num_samples": num,
        "sampler": f"bip.samplers.reverse_diffusion, {IMAGE_EVAL['num_levels']} geometric "
        f"levels {t.sigma_max} -> {t.sigma_min}, then x + sigma_min^2 s(x, sigma_min)",
        "num_training_images": int(num_train),
        "num_training_total": int(
            law.num_examples if isinstance(law, images.EmpiricalLaw) else t.steps * t.batch
        ),
        "nn_distance": _quantiles(nn),
        "nn_baseline": _quantiles(baseline),
        "nn_baseline_is": baseline_what,
        "nn_ratio_median": float(np.median(nn) / np.median(baseline)),
        "copies": int(np.sum(nn < 0.25 * np.quantile(baseline, 0.05))),
        "copies_rule": "samples closer to a training image than 1/4 of the 5% quantile of the "
        "baseline",
        "sample_norm_mean": float(np.mean(norms)),
        "pixel_range": [float(np.min(samples)), float(np.max(samples))],
    }
    if phantom:
        dist = np.asarray(law.manifold.distance(samples))
        entry["manifold_distance"] = _quantiles(dist)
        entry["manifold_distance_relative"] = float(
            np.mean(dist) / quality["manifold_distance"]["data_norm"]
        )
    quality["samples"] = entry
    return quality


def model_card_markdown(card: Mapping[str, Any], recipe: Recipe) -> str:
    """A ``README.md`` model card from ``model.json`` content."""
    data = ", ".join(f"{k}={v}" for k, v in recipe.data.to_dict().items())
    net = card["net"]
    t = recipe.training
    kind = net.get("kind", "mlp")
    event = tuple(card.get("event_shape", [2]))
    shape_text = ", ".join(str(n) for n in event)
    lines = [
        f"# {card['name']}",
        "",
        "<!-- generated by bip.train from model.json; retrain to refresh -->",
        "",
        (card.get("description") or "A learned score prior."),
        "",
        "## Load",
        "",
        "```python",
        "import bip.networks",
        f'prior = bip.networks.load_prior("{card["name"]}")  # hash-checked, offline',
        f"s = prior.score(x, sigma)  # x: (..., {shape_text}), sigma > 0 (scalar or per batch)",
        "```",
        "",
        "## Model",
        "",
        f"- data law: {data}",
    ]
    if kind == "unet":
        lines.append(
            f"- network: U-Net (`bip.networks.UNet`) on {event[0]}x{event[1]} images: "
            f"{len(net['channel_mult'])} resolution levels with {net['channels']} x "
            f"{net['channel_mult']} channels, {net['num_res_blocks']} residual block(s) per "
            f"level, GroupNorm ({net['groups']} groups), FiLM on {net['num_frequencies']} "
            f"sinusoidal frequencies of log(sigma), {net['patch']}x{net['patch']} patch stem, "
            f"{card['num_params']} float32 parameters"
        )
    else:
        lines.append(
            f"- network: residual MLP with FiLM conditioning on log(sigma): width "
            f"{net['width']}, depth {net['depth']}, mlp_ratio {net['mlp_ratio']}, "
            f"{net['num_frequencies']} sinusoidal frequencies, {card['num_params']} float32 "
            "parameters"
        )
    eval_text = f"; evaluation below: {card['eval_seconds']} s" if card.get("eval_seconds") else ""
    lines += [
        f"- parametrisation: EDM preconditioning with sigma_data = {net['sigma_data']}; "
        "`sigma^2 s(x, sigma) = -sigma^2/(sigma^2 + sd^2) x + c_out F(c_in x, log sigma)`, "
        "`c_in = 1/sqrt(sigma^2 + sd^2)`, `c_out = sigma sd/sqrt(sigma^2 + sd^2)`",
        f"- training: denoising score matching, {card['steps']} steps, batch {t.batch}, "
        f"AdamW lr {t.lr} (warmup {t.warmup}, cosine to {t.final_lr_fraction} x), "
        f"weight decay {t.weight_decay}, clip {t.clip}, EMA {t.ema}, "
        f"sigma {_sigma_law_text(t)}, seed {recipe.seed}",
        f"- final training loss (mean of the last 100 steps, EDM-weighted): "
        f"{card['final_loss']:.4f}",
        f"- training time: {card['train_seconds']} s on the machine below{eval_text} "
        f"(jax {card['versions']['jax']}, flax {card['versions']['flax']})",
        f"- weights: `{card['weights']}` ({card['weights_bytes']} bytes), "
        f"sha256 `{card['weights_sha256']}`",
        "",
    ]
    if card.get("machine"):
        lines[-1:-1] = [f"- machine: {card['machine']}"]
    q = card.get("quality") or {}
    if q:
        lines += ["## Measured quality", ""]
    if q.get("profile"):
        p = q["profile"]
        rng = p["alpha_range"]
        reference = p.get("reference", "bip.priors.exact(law)")
        floor = p.get("floor_fraction")
        lines += [
            f"### Score error against `{reference}`",
            "",
            _profile_method_text(p, q["num_samples"]),
            "",
            f"- **relative L2 score error at sigma = 0.1: {q['rel_error_at_0.1']:.4f}**"
            + (" (bar: < 0.1)" if kind == "mlp" else ""),
            f"- fitted exponent of `abs_error ~ sigma^beta` over sigma in "
            f"{p['sigmas'][0]:.3g}..{p['sigmas'][-1]:.3g}: beta = {p['beta']:.3f}",
            "- admissible tempering range `max(-beta, 0) < alpha < 2`: "
            + (f"({rng[0]:.3f}, {rng[1]:.0f})" if rng else "empty (beta <= -2)"),
            "",
            "| sigma | relative error | absolute error |" + (" floor share |" if floor else ""),
            "|---:|---:|---:|" + ("---:|" if floor else ""),
        ]
        lines += [
            f"| {s:.4g} | {r:.4f} | {a:.4g} |" + (f" {floor[i]:.3f} |" if floor else "")
            for i, (s, r, a) in enumerate(
                zip(p["sigmas"], p["rel_error"], p["abs_error"], strict=True)
            )
        ]
        lines.append("")
    if q.get("langevin"):
        lines += _langevin_markdown(q["langevin"])
    if q.get("manifold_distance"):
        lines += _distance_markdown(q["manifold_distance"])
    if q.get("samples"):
        lines += _samples_markdown(q["samples"], card)
    lines += [
        "## Reproduce",
        "",
        "```",
        f"bip train priors/{card['name']}/recipe.toml --out priors/{card['name']} "
        "--drop-checkpoint",
        "```",
        "",
        "Re-measure the quality above without retraining (rewrites `model.json` and this card):",
        "",
        "```",
        f"bip train priors/{card['name']}/recipe.toml --out priors/{card['name']} --eval-only",
        "```",
        "",
    ]
    return "\n".join(lines)


def _profile_method_text(p: Mapping[str, Any], num_samples: int) -> str:
    if p.get("floor_fraction") is None:
        return (
            f"On `x = Phi(u) + sigma z`, u ~ law ({num_samples} samples per sigma, the "
            "same draws at every sigma; `bip.profile.score_error_profile`):"
        )
    return (
        f"On `x = x0 + sigma z`, x0 ~ law ({num_samples} samples per sigma, the same draws at "
        "every sigma; `bip.profile.denoising_error_profile`): the law has no exact score (a "
        "random number of ellipses), so the squared error is the denoising loss "
        "`E|s + z/sigma|^2` minus its floor `n / sigma^2` (Tweedie's identity; `n` = 6 per "
        "ellipse, the local manifold's dimension; exact to leading order in sigma, checked "
        "against the exact score on the phantom law to 0.002 in relative error up to sigma = "
        "0.1). The floor's share of the loss is the last column:"
    )


def _sigma_law_text(t: TrainingSpec) -> str:
    if t.sigma_sampling == "lognormal":
        return (
            f"log-normal (log sigma ~ N({t.sigma_log_mean:.3g}, {t.sigma_log_std:.3g}^2)) "
            f"truncated to [{t.sigma_min}, {t.sigma_max}]"
        )
    return f"log-uniform on [{t.sigma_min}, {t.sigma_max}]"


def _langevin_markdown(lv: Mapping[str, Any]) -> list[str]:
    ts, std = lv["ts1"], lv["standard"]
    lines = [
        "### Fig. 2: TS-1 versus standard Langevin with this network",
        "",
        f"ULA at sigma = {lv['sigma']} with the default step `0.1 sigma^(2 - alpha)`, chains "
        f"started from the data law; {lv['num_bins']}-bin histograms of the chart parameter of "
        "the last positions against p_data and the uniform (volume) law on the curve "
        f"(TV(p_data, uniform) = {lv['tv_p_data_uniform']:.3f}; `bip.profile.toy_langevin_check`):",
        "",
        "| sampler | chains | steps | step h | time | TV to uniform | TV to p_data | "
        "noise floor | diverged |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in (("TS-1 (alpha = 1)", ts), ("standard (alpha = 0)", std)):
        lines.append(
            f"| {name} | {r['chains']} | {r['steps']} | {r['step_size']:.0e} | "
            f"{r['time']:.3g} | **{r['tv_uniform']:.3f}** | {r['tv_p_data']:.3f} | "
            f"{r['histogram_noise']:.3f} | {r['diverged']} |"
        )
    verdict = "within" if ts["tv_uniform"] < 0.08 else "NOT within"
    lines += [
        "",
        f"- TS-1 is {verdict} TV 0.08 of the uniform law ({ts['tv_uniform']:.3f}): the "
        "maximum-entropy prior, from a network trained on p_data alone.",
        f"- Standard Langevin stays near its start, p_data (TV {std['tv_p_data']:.3f}; "
        f"{std['tv_uniform']:.3f} from uniform): at h = {std['step_size']:.0e} its "
        f"{std['steps']} steps are a time of {std['time']:.3g}, in which a chain moves about "
        f"{math.sqrt(2 * std['time']):.2f} rad along the curve. Its mixing time along M blows "
        "up as sigma -> 0 (SCIENCE.md sec. 3): it cannot mix in 10^4 steps, and its "
        "histogram says where it started, not what it converges to.",
        "",
    ]
    return lines


def _distance_markdown(md: Mapping[str, Any]) -> list[str]:
    lines = [
        "### Distance to the manifold of tempered-Langevin samples",
        "",
        f"{md['chains']} chains from the data law, ULA with drift `sigma^alpha s` at sigma = "
        f"{md['sigma']}, step `0.1 sigma^(2 - alpha)`; distance of the last positions to the "
        f"{md.get('manifold', 'phantom manifold (`PhantomManifold.distance`)')}, absolute "
        "and relative to the mean "
        f"image norm of the data ({md['data_norm']:.3f}). With the exact score the law "
        "`p_sigma^(sigma^alpha)` has standard deviation `sigma' = sigma^(1 - alpha/2)` in each "
        "of the `d - n` normal directions, so its samples sit at `sqrt(d - n) sigma'` (theory "
        "column). `denoised`: after one Tweedie step `x + sigma'^2 s(x, sigma')` "
        "(`bip.profile.manifold_distance_check`).",
        "",
        "| alpha | steps | distance | relative | theory (exact score) | denoised | "
        "denoised relative | diverged |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in md["runs"].values():
        lines.append(
            f"| {r['alpha']:g} | {r['steps']} | {r['distance']:.3f} | **{r['relative']:.3f}** | "
            f"{r['theory']:.3f} | {r['denoised']:.3f} | **{r['denoised_relative']:.3f}** | "
            f"{r['diverged']} |"
        )
    runs = list(md["runs"].values())
    raw_ok = [f"{r['alpha']:g}" for r in runs if r["relative"] < 0.1]
    den_ok = [f"{r['alpha']:g}" for r in runs if r["denoised_relative"] < 0.1]
    worst = max(runs, key=lambda r: r["alpha"])
    norm = md["data_norm"]
    lines += [
        "",
        f"- Below 0.1 of the image norm: the raw samples for alpha in "
        f"{{{', '.join(raw_ok) or 'none'}}}, the denoised ones for alpha in "
        f"{{{', '.join(den_ok) or 'none'}}}.",
        f"- In d = {md.get('ambient_dim', '?')} dimensions the "
        "criterion is out of reach of raw TS samples at this sigma for larger alpha even with "
        f"the exact score (theory / norm = {worst['theory'] / norm:.2f} at alpha = "
        f"{worst['alpha']:g}): the tempered law concentrates on M only as sigma -> 0, at the "
        "rate sigma^(1 - alpha/2) per normal direction.",
        "- Where the chains sit further out than the theory (large alpha), the network is "
        "the limit: the TS law at sigma spreads at sigma' = sigma^(1 - alpha/2) > sigma across "
        "M, noise levels the net never saw with the label sigma (it learns the score of "
        "p_sigma near p_sigma's own samples), and its pull back to M is too weak there.",
        "",
    ]
    return lines


def _training_count_text(sm: Mapping[str, Any]) -> str:
    total = sm.get("num_training_total", sm["num_training_images"])
    if total == sm["num_training_images"]:
        return f"{total}"
    return f"first {sm['num_training_images']} (of {total}, `NN_TRAINING_MAX`)"


def _samples_markdown(sm: Mapping[str, Any], card: Mapping[str, Any]) -> list[str]:
    nn, base = sm["nn_distance"], sm["nn_baseline"]
    lines = [
        "### Reverse-diffusion samples are new images, not copies",
        "",
        f"{sm['num_samples']} samples ({sm['sampler']}). Nearest-neighbour L2 distance to the "
        f"{_training_count_text(sm)} training images, against the baseline: "
        f"{sm['nn_baseline_is']}.",
        "",
        "| | mean | min | 5% | median | 95% |",
        "|---|---:|---:|---:|---:|---:|",
        f"| samples to training set | {nn['mean']:.3f} | {nn['min']:.3f} | {nn['q05']:.3f} | "
        f"{nn['median']:.3f} | {nn['q95']:.3f} |",
        f"| baseline | {base['mean']:.3f} | {base['min']:.3f} | {base['q05']:.3f} | "
        f"{base['median']:.3f} | {base['q95']:.3f} |",
        "",
        f"- median ratio samples / baseline: {sm['nn_ratio_median']:.2f}; near-copies "
        f"({sm['copies_rule']}): {sm['copies']} of {sm['num_samples']}",
        f"- mean sample norm {sm['sample_norm_mean']:.3f}, pixel range "
        f"[{sm['pixel_range'][0]:.3f}, {sm['pixel_range'][1]:.3f}]",
    ]
    if "manifold_distance" in sm:
        md = sm["manifold_distance"]
        lines.append(
            f"- distance of the samples to the phantom manifold: mean {md['mean']:.3f} "
            f"(relative to the data norm: {sm['manifold_distance_relative']:.3f}), median "
            f"{md['median']:.3f}, 95% {md['q95']:.3f}"
        )
    if card.get("samples_figure"):
        lines += ["", f"![samples]({card['samples_figure']})"]
    lines.append("")
    return lines


def evaluate_folder(
    folder: str | os.PathLike, *, figure: bool = True, machine: str | None = None
) -> dict[str, Any]:
    """Measure the quality of a trained prior folder again and rewrite its card.

    Loads the prior (hash-checked), runs the evaluation of ``train(..., evaluate=True)``
    (profile against the exact score where one exists, the Fig. 2 Langevin check for von Mises
    toys, and for images the manifold distance and reverse-diffusion samples), and rewrites
    ``model.json`` (``quality``, ``eval_seconds``) and ``README.md``; the weights and the
    training fields are untouched. For image priors, ``figure`` also writes ``samples.png``
    (samples above their nearest training images).
    """
    folder = Path(folder)
    card = priorfile.read_card(folder)
    recipe = load_recipe(folder / priorfile.RECIPE_FILE)
    law = build_law(recipe)
    prior = networks.load_prior(folder)
    start = time.perf_counter()
    card["quality"] = evaluate(prior, law, recipe)
    card["eval_seconds"] = round(time.perf_counter() - start, 1)
    if machine is not None:
        card["machine"] = machine
    if figure and recipe.data.source in IMAGE_SOURCES:
        _samples_figure(folder, prior, law, recipe)
        card["samples_figure"] = "samples.png"
    write(folder, card, recipe)
    return card


def write(folder: str | os.PathLike, card: Mapping[str, Any], recipe: Recipe) -> None:
    """Write a prior folder's ``model.json`` (``bip.priorfile.write_card``) and its Markdown
    card ``README.md`` (``model_card_markdown``), both atomically.

    Example:
        >>> card = bip.priorfile.read_card("runs/circle")
        >>> write("runs/circle", card, bip.recipes.load_recipe("runs/circle/recipe.toml"))
    """
    priorfile.write_card(folder, card)
    text = model_card_markdown(card, recipe)
    outputs.atomic_write_bytes(Path(folder) / "README.md", text.encode())


def _samples_figure(folder: Path, prior: ScorePrior, law, recipe: Recipe, num: int = 16) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    t = recipe.training
    _, samples = profile.diffusion_samples(
        jax.random.fold_in(jax.random.key(recipe.seed + 1), 2),
        prior,
        IMAGE_EVAL["num_samples"],
        sigma_max=t.sigma_max,
        sigma_min=t.sigma_min,
        num_levels=IMAGE_EVAL["num_levels"],
    )
    samples = np.asarray(samples[:num])
    best_d = np.full(num, np.inf)
    best = np.zeros_like(samples)
    for chunk in _training_draws(recipe, law)[0]:
        chunk = np.asarray(chunk, np.float64)
        d = profile.nearest_distances(samples, chunk)
        flat = chunk.reshape(len(chunk), -1)
        d2 = ((samples.reshape(num, -1)[:, None, :] - flat[None]) ** 2).sum(-1)
        idx = d2.argmin(axis=1)
        better = d < best_d
        best[better] = chunk[idx[better]]
        best_d = np.minimum(best_d, d)
    fig, axes = plt.subplots(2, num, figsize=(num * 0.9, 2.2))
    for i in range(num):
        for row, img in enumerate((samples[i], best[i])):
            ax = axes[row, i]
            ax.imshow(np.clip(img, 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[1, i].set_xlabel(f"{best_d[i]:.2f}", fontsize=7)
    axes[0, 0].set_ylabel("sample", fontsize=7)
    axes[1, 0].set_ylabel("nearest\ntraining", fontsize=7)
    fig.suptitle(
        f"{recipe.name}: reverse-diffusion samples (top), nearest training image "
        "(bottom, L2 distance below)",
        fontsize=8,
    )
    plots.save_figure(fig, folder / "samples.png")
    plt.close(fig)
