"""One schema for problem specs and recipes (bip.schema, bip.specs) and one data-law builder."""

import dataclasses
import tomllib
from pathlib import Path

import pytest

from bip import laws, priorfile, problems, recipes, train
from bip.schema import SpecError, parse
from bip.specs import DataSpec, ProblemSpec, Recipe

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "problems").glob("*.toml"))
RECIPES = sorted((ROOT / "priors").glob("*/recipe.toml"))
# config hashes the shipped recipes had before the shared schema (checkpoints and cards keep them;
# ellipses128-unet: its 6000-step recipe, trained after)
CONFIG_SHA256 = {
    "circle-vonmises": "c2dbb2741f59cf87fbe01029792d4bd560f3a61d5f86af7c28ac39a301755e24",
    "digits16-unet": "23efbdf9c774e64747398a1ea26be2012de6c11d5d5918c5e482977f9bca2621",
    "ellipse-vonmises": "c3eb8909cfc51c07c73182423622f4d9bf341b2850cb0a87f8274ed2f8d9d474",
    "ellipses128-unet": "8c962afe688d3ec507e240ad510d1791d9c874626970ceaaaf4863e8e44e0d39",
    "phantom32-unet": "82a2bc5bd5302afefb06335ed44fecf5c96762b54cdd44f1d73d0884bb97c1e7",
}


@pytest.mark.parametrize("path", SPECS + RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_files_round_trip(path):
    """TOML -> schema -> dict -> schema, and -> TOML text -> schema, give the same spec."""
    cls = Recipe if path.name == "recipe.toml" else ProblemSpec
    spec = parse(cls, tomllib.loads(path.read_text()), str(path))
    plain = spec.to_dict()
    assert parse(cls, plain, "dict") == spec
    assert parse(cls, tomllib.loads(spec.to_toml()), "text") == spec
    assert tomllib.loads(spec.to_toml()) == plain  # plain TOML types only
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.data.source = "x"  # frozen: a changed spec is a new, checked one
    if cls is ProblemSpec:  # bip solve records load()'s dict in its outputs
        assert problems.as_spec(problems.load(path)) == spec == problems.load_spec(path)


def test_shipped_recipes_keep_their_config_hash():
    assert {p.parent.name for p in RECIPES} == set(CONFIG_SHA256)
    for path in RECIPES:
        recipe = recipes.load_recipe(path)
        assert recipe.config_sha256 == CONFIG_SHA256[path.parent.name], path
        if (path.parent / priorfile.CARD_FILE).is_file():  # what the card recorded
            card = priorfile.read_card(path.parent)
            assert card["recipe_config_sha256"] == recipe.config_sha256
    # the old key name reads as the new one, and gives the same recipe and hash
    old = {"data": {"manifold": "phantom", "size": 16}}
    assert recipes.load_recipe(old) == recipes.load_recipe(
        {"data": {"source": "phantom", "size": 16}}
    )


CIRCLE = """name = "t"
[data]
source = "circle"
[operator]
kind = "identity"
[noise]
std = 0.3
[sampler]
sigma = 0.1
"""
RECIPE = """[data]
source = "circle"
[training]
steps = 10
"""


@pytest.mark.parametrize(
    "text, edit, message",
    [
        (CIRCLE, ("std = 0.3", "std = 0.3\nlevel = 2"), "[noise] level: unknown key (known keys: "),
        (
            CIRCLE,
            ("sigma = 0.1", 'sigma = "small"'),
            '[sampler] sigma: must be a number, got "small"',
        ),
        (CIRCLE, ("std = 0.3", "std = -0.3"), "[noise] std: must be > 0, got -0.3"),
        (CIRCLE, ("std = 0.3", ""), "[noise] std: is required"),
        (CIRCLE, ('name = "t"', ""), "name: is required"),
        (CIRCLE, ("[operator]", "[operator]\nviews = 2.5"), "[operator] views: must be an integer"),
        (CIRCLE, ('kind = "identity"', "kind = 1"), "[operator] kind: must be a string, got 1"),
        (
            CIRCLE,
            ('"circle"', '"circle"\nsize = 8'),
            "[data] size: is not used here (allowed keys: ",
        ),
        (
            RECIPE,
            ("steps = 10", "steps = 10\nlerning_rate = 0.1"),
            "[training] lerning_rate: unknown",
        ),
        (RECIPE, ("steps = 10", "steps = 10.5"), "[training] steps: must be an integer, got 10.5"),
        (
            RECIPE,
            ("steps = 10", "steps = 10\nema = 1.0"),
            "[training] ema: must lie in [0, 1), got 1.0",
        ),
        (RECIPE, ('source = "circle"', ""), "[data] source: is required"),
        (
            RECIPE,
            ("[data]", "[data]\nmanifold = 'circle'"),
            "[data] source: given twice (as 'manifold'",
        ),
        (RECIPE, ("[data]", "seed = -1\n[data]"), "seed: must be >= 0, got -1"),
    ],
)
def test_errors_name_file_section_and_key(tmp_path, text, edit, message):
    """Problem specs and recipes report a bad key the same way: file, [section] key, what."""
    path = tmp_path / "bad.toml"
    assert edit[0] in text
    path.write_text(text.replace(edit[0], edit[1], 1))
    load = recipes.load_recipe if text is RECIPE else problems.load
    with pytest.raises(SpecError) as info:
        load(path)
    origin = f"recipe {path}" if text is RECIPE else str(path)
    assert str(info.value).startswith(f"{origin}: {message}"), str(info.value)
    assert isinstance(info.value, problems.SpecError) and isinstance(
        info.value, recipes.RecipeError
    )


def test_train_and_solve_build_their_laws_with_one_function(monkeypatch, tmp_path):
    """``bip train`` (recipes.build_law) and ``bip solve`` (problems.build) get their data
    laws from ``bip.laws.data_law``; the same [data] table gives the same law in both."""
    seen = []

    def spy(data):
        seen.append(type(data).__name__)
        return data_law(data)

    data_law = laws.data_law
    monkeypatch.setattr(laws, "data_law", spy)
    assert train.build_law is recipes.build_law
    recipe = {"data": {"source": "circle", "kappa": 4.0}, "training": {"steps": 2, "warmup": 0}}
    result = train.train(recipe, tmp_path / "run", stop_after=0, progress=False, evaluate=False)
    assert result.steps_done == 0 and seen == ["DataSpec"]
    problem = problems.build(problems.load("circle-toy"))
    assert seen == ["DataSpec", "ProblemData"]
    spec_data = problems.load_spec("circle-toy").data
    shared = {k: v for k, v in spec_data.to_dict().items() if k in DataSpec.__dataclass_fields__}
    assert problem.law == data_law(parse(DataSpec, shared, "x"))  # VonMises(4, pi) both ways
    assert problem.law.kappa == 4.0 and problem.manifold is problem.law.manifold
