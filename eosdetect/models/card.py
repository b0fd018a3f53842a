"""What a model folder says about itself: its metrics.json and its MODEL_CARD.md.

The card is generic: it knows nothing of any particular model. Text about a
bundled model (its limits, its transfer experiments) comes from the recipe
that built it (:func:`eosdetect.training.recipes.bundled_card`).
"""

from __future__ import annotations

from eosdetect.core.metrics import fmt_rate
from eosdetect.models.config import ModelConfig


def model_metrics(config: ModelConfig, *, validation: dict, data: dict, matching: str, thresholds_fitted_on: str,
                  training: dict, per_image: list[dict] | None = None, **extra) -> dict:
    """A model folder's metrics.json: what it scored, on what data, how measured.

    Parameters
    ----------
    config : ModelConfig
    validation : dict
        Pooled figures on the validation images (:func:`eosdetect.core.metrics.summarize`).
    data : dict
        What it was trained and validated on.
    matching : str
        How detections were matched to labels (e.g. :func:`matching_description`).
    thresholds_fitted_on : str
        Where the thresholds come from.
    training : dict
        How it was trained (command, settings, seconds, machine).
    per_image : list of dict, optional
        The validation figures per image.
    **extra
        Further sections (baselines, cross-validation, adaptation...).

    Returns
    -------
    dict

    >>> m = model_metrics(ModelConfig(name="mine"), validation={"f1": 0.9}, data={}, matching="m",
    ...                   thresholds_fitted_on="t", training={})
    >>> list(m)
    ['model', 'version', 'validation', 'data', 'matching', 'thresholds_fitted_on', 'training']
    """
    out = {"model": config.name, "version": config.version, "validation": validation}
    if per_image is not None:
        out["validation_per_image"] = per_image
    out.update(data=data, matching=matching, thresholds_fitted_on=thresholds_fitted_on, training=training)
    out.update(extra)
    return out


def matching_description(config: ModelConfig) -> str:
    """How ``eosdetect train`` and ``evaluate`` match detections to labels, in words."""
    unit = "px" if config.sizes_in_pixels else "um"
    return (f"one-to-one Hungarian matching; a detection may match a true {config.class_name} inside its box or "
            f"mask or within {config.cell_diameter_um / 2:g} {unit} (half a cell) of its centre")


def _card_row(label: str, s: dict) -> str:
    """One row of the model card's validation table."""
    mape = f"{s['count_mape'] * 100:.1f}%" if s.get("count_mape") is not None else "n/a"
    mae = f"{s['count_mae']:.2f}" if s.get("count_mae") is not None else "n/a"
    return (f"| {label} | {fmt_rate(s['precision'])} | {fmt_rate(s['recall'])} | {s['f1']:.3f} | "
            f"{mae} | {mape} |")


def model_card(config: ModelConfig, metrics: dict, *, limits: list[str] | None = None,
               sections: list[str] = ()) -> str:
    """A model folder's MODEL_CARD.md (markdown): what the model does, its
    training data and run, its validation figures, and its limits.

    Parameters
    ----------
    config : ModelConfig
    metrics : dict
        The model's metrics.json (``validation``, ``data``, ``training``,
        ``matching``, ``thresholds_fitted_on``; optionally ``baseline_*`` and
        ``crossval``).
    limits : list of str, optional
        The card's limits; default the generic ones (validated on held-out
        images of its own training set, check it on your own). Only the
        recipes of bundled models, which know their data, give others.
    sections : list of str
        Markdown lines added before the limits.

    Returns
    -------
    str
    """
    v = metrics["validation"]
    # a model trained without a pixel size works at a fraction of the image size, not at um/px
    scale = (f"at 1/{config.pixel_size_um:g} of the image size" if config.sizes_in_pixels
             else f"at {config.pixel_size_um} um/px")
    helper_scale = (f"at 1/{config.helper_pixel_size_um:g} of the image size" if config.sizes_in_pixels
                    else f"at {config.helper_pixel_size_um} um/px")
    fitted_on = metrics["thresholds_fitted_on"]
    fitted = "not fitted" not in fitted_on
    lines = [
        f"# {config.name} {config.version}",
        "",
        config.description,
        "",
        "## What it does",
        "",
        f"Counts **{config.class_name}** objects. "
        + (f"A U-Net segments {config.unet_class_name} objects {scale}; "
           + ("a helper (a logistic regression on 11 colour statistics of the cell's stained pixels"
              if config.helper_kind == "colour" else
              f"a helper (a small CNN that names each cell's class, one of {', '.join(config.helper_classes)}"
              if config.multiclass else "a helper (a small CNN")
           + (", on the image white-balanced so that its background is neutral grey) "
              if config.helper_white_balance else ") ")
           + f"re-scores each one on a {config.helper_crop_size}-px crop {helper_scale} and "
           f"only those above `helper_threshold` are counted."
           if config.helper_enabled else
           f"A U-Net ({config.unet_depth} poolings, {config.unet_base_filters} base filters) predicts a "
           f"probability map {scale}; distance transform + watershed split it into objects."),
        "",
        (f"Inputs are assumed to be {config.input_pixel_size_um} um/px unless `--pixel-size` says otherwise"
         + ("" if config.pixel_size_measured else " (an estimate: the training images' pixel size is not published)")
         + "."
         if not config.sizes_in_pixels else
         "Trained without a pixel size: sizes are in pixels of the training images, so use it on images "
         "taken at the same magnification and resolution."),
        "",
        "## Training data",
        "",
    ]
    for k, val in metrics["data"].items():
        if isinstance(val, list):
            val = f"{len(val)} images" if len(val) > 8 else ", ".join(map(str, val))
        elif isinstance(val, dict):
            val = ", ".join(f"{a.replace('_', ' ')} {b}" for a, b in val.items() if isinstance(b, (int, float, str)))
        lines.append(f"- {k.replace('_', ' ')}: {val}")
    t = metrics["training"]
    lines += [
        "",
        "## How it was trained",
        "",
        (f"`{t['command']}` " if t.get("command") else
         f"`python scripts/train_bundled.py configs/{_basename(t['config_file'])} -o <model folder>` ")
        +
        f"(seed {t['train']['train_seed']}; {t['seconds']['unet'] + t['seconds']['helper']:.0f} s of training "
        f"on {t['machine']}). "
        + (f"Thresholds fitted on {fitted_on}." if fitted else f"{fitted_on[0].upper()}{fitted_on[1:]}."),
        "",
        "## Validation",
        "",
        f"Matching: {metrics['matching']}.",
        "",
        "| model | precision | recall | F1 | count MAE | count error (mean relative) |",
        "| --- | --- | --- | --- | --- | --- |",
        _card_row(config.name, v),
    ]
    for key, b in metrics.items():
        if key.startswith("baseline"):
            lines.append(_card_row(f"{key.replace('baseline_', '')} baseline", b["summary"]))
    cv = metrics.get("crossval")
    if cv:
        lines.append(_card_row(f"{config.name}, {cv.get('folds', 5)}-fold cross-validation", cv["pooled"]))
        lines += ["", f"Cross-validation: {cv['method']}"]
    if v.get("tp", 0) + v.get("fn", 0) == 0:
        lines += ["", "**Not measured:** no labelled cell is among the validation images, so the figures above "
                  "say nothing of this model. Validate it on labelled images with `eosdetect evaluate`."]
    lines += list(sections)
    limits = list(limits or []) or [
        f"Validated on {v['n_images']} held-out image(s) of the same set it was trained on"
        + ("; the thresholds were fitted on them, so expect" if fitted else ", too few to fit its threshold on; expect")
        + " lower figures on images from other labs, stains or scanners.",
        "Check it on your own labelled images with `eosdetect evaluate` before relying on its counts.",
    ]
    lines += ["", "## Limits", ""] + [f"- {x}" for x in limits] + [""]
    return "\n".join(lines)


def _basename(p: str) -> str:
    return p.replace("\\", "/").split("/")[-1]
