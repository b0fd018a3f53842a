"""Change an inference setting of a bundled model, refit its thresholds and re-measure it.

    python scripts/remeasure_bundled.py nuclei-he --set unet_tta=false --set version=1.1.0 [--refit]

For settings that change how a trained network is run, not its weights (test-
time augmentation, tile size). The model is measured on its validation
images with its thresholds as they are (with ``--refit``, refitted there over
the grid it was trained with, ``metrics.json`` ``training.threshold_grid``:
tuning to the validation images, so kept for changes that need it), and the
folder's config.json, thresholds.json, metrics.json (its ``validation``
figures; the earlier ones are kept under ``remeasured``) and MODEL_CARD.md
are rewritten. Its weights and LiteRT files
do not change. Recipes: ``nuclei-he`` (MoNuSeg validation tiles).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eosdetect.io import atomic_write_text, write_json  # noqa: E402
from eosdetect.models.config import ModelConfig  # noqa: E402
from eosdetect.models.store import BUNDLED_DIR, load_model  # noqa: E402
from eosdetect.training import recipes  # noqa: E402
from eosdetect.training import shared_data as sd  # noqa: E402
from eosdetect.training.evaluation import evaluate_model, fit_thresholds  # noqa: E402


def validation_items(recipe: str):
    """The labelled validation images a recipe's model was measured on."""
    if recipe == "nuclei-he":
        return [recipes.nuclei_eval_item(i) for i in sd.monuseg_split(sd.load_monuseg())[1]]
    raise SystemExit(f"remeasure_bundled: recipe {recipe!r} is not supported (nuclei-he is)")


def setting(text: str) -> tuple[str, object]:
    """``name=value`` with the value read as YAML (``false``, ``512``, ``1.1.0``)."""
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected name=value")
    return name, yaml.safe_load(value) if name != "version" else value


def remeasure(name: str, changes: dict, *, refit: bool = False) -> dict:
    """Apply ``changes`` to the bundled model ``name`` and re-measure it (``refit``: its thresholds
    refitted); returns the new metrics."""
    folder = BUNDLED_DIR / name
    old = load_model(folder)
    config = ModelConfig.from_dict({**old.config.to_dict(), **changes}, source="--set")
    items = validation_items(config.training.get("recipe"))
    grid = old.metrics["training"]["threshold_grid"]
    with tempfile.TemporaryDirectory() as tmp:  # the changed model, read as a user would
        trial = Path(shutil.copytree(folder, Path(tmp) / name))
        write_json(trial / "config.json", config.to_dict())
        model = load_model(trial)
        if refit:
            thresholds, ev = fit_thresholds(model, items, grid, base=old.thresholds)
        else:
            thresholds, ev = old.thresholds, evaluate_model(model, items)
    metrics = dict(old.metrics, version=config.version, validation=ev["summary"], validation_per_image=ev["per_image"])
    metrics["remeasured"] = [*old.metrics.get("remeasured", []), {
        "command": f"python scripts/remeasure_bundled.py {name} "
                   + " ".join(f"--set {k}={v}" for k, v in changes.items()) + (" --refit" if refit else ""),
        "thresholds": "refitted on the validation images" if refit else "kept",
        "changed": {k: [getattr(old.config, k), v] for k, v in changes.items()},
        "validation_before": old.metrics["validation"],
        "thresholds_before": old.thresholds.to_dict(),
    }]
    write_json(folder / "config.json", config.to_dict())
    write_json(folder / "thresholds.json", thresholds.to_dict())
    write_json(folder / "metrics.json", metrics)
    atomic_write_text(folder / "MODEL_CARD.md", recipes.bundled_card(config, metrics))
    return metrics


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a bundled model's name")
    ap.add_argument("--refit", action="store_true", help="refit the thresholds on the validation images")
    ap.add_argument("--set", dest="changes", action="append", type=setting, required=True, metavar="NAME=VALUE",
                    help="a config field and its new value (repeatable)")
    args = ap.parse_args(argv)
    changes = dict(args.changes)
    unknown = set(changes) - {f.name for f in dataclasses.fields(ModelConfig)}
    if unknown:
        raise SystemExit(f"remeasure_bundled: not config fields: {', '.join(sorted(unknown))}")
    before = load_model(args.model).metrics["validation"]
    after = remeasure(args.model, changes, refit=args.refit)["validation"]
    print(f"{args.model}: validation F1 {before['f1']:.4f} -> {after['f1']:.4f} "
          f"(precision {before['precision']:.4f} -> {after['precision']:.4f}, "
          f"recall {before['recall']:.4f} -> {after['recall']:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
