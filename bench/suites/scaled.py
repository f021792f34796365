"""Suites derived from another one at load time: named after the user's data, or shrunk to a smoke run.

* **Named after the data.** A suite whose ``name`` holds ``{data}`` (the built-in
  ``imagefolder`` suite: ``name: "{data}"``) is a template for any image folder: ``{data}``
  becomes the name of the ``--data-root`` folder, so runs go to ``runs/<folder>/`` and the
  leaderboard is ``<folder>.md``. A ``{data_summary}`` in its description or its
  ``paper_differences`` becomes what the folder holds, inferred when it is read (classes,
  channels × height × width, the size of each split after the validation hold-out and any
  limits, and the augmentation), so the leaderboard's header describes *this* data.
* **Smoke run** (``bench run --smoke``): any suite at a few minutes' scale on a CPU, every
  stage of the pipeline kept (its backbone, plugins, evaluators, checkpoints, resumption,
  the lr decay, the report), on few steps and few inputs. It is filed as ``<suite>-smoke``,
  and its leaderboard's first listed difference says plainly that it is a smoke run whose
  numbers mean nothing.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from bench.config.schema import Suite
from bench.core.errors import BenchError

DATA = "{data}"
DATA_SUMMARY = "{data_summary}"

# the smoke scale: 2 epochs (of 3 optimizer steps where the suite paces by steps), lr decayed
# from epoch 1 so that the decay path runs, a checkpoint and a log line every epoch
SMOKE_EPOCHS = 2
SMOKE_EPOCH_STEPS = 3
SMOKE_TRAIN = 1000       # stratified, before the validation hold-out (≥ 10 per class for 100 classes)
SMOKE_TEST = 200
SMOKE_SUBSET = 50        # attack inputs
# the attack methods at smoke budgets: one of each kind the later evaluators read (a gradient
# attack per norm, the cross-entropy / margin-loss pair of the reliability checks, a
# minimum-norm attack, AutoAttack through its package), a few steps each; a suite's full list
# (APGD-T with 9 targets, Square with 5,000 queries, …) costs minutes per input on a CPU ResNet
SMOKE_ATTACKS = {
    "methods": ["fgsm", "pgd-linf", "pgd-l2", "apgd-ce-l2", "apgd-dlr-l2", "fmn-l2", "autoattack-l2"],
    "params": {"pgd-linf": {"steps": 2}, "pgd-l2": {"steps": 2},
               "apgd-ce-l2": {"steps": 2, "eps": [0.5]}, "apgd-dlr-l2": {"steps": 2, "eps": [0.5]},
               "fmn-l2": {"steps": 5},
               "autoattack-l2": {"max_inputs": 10, "eps": [0.5], "apgd_steps": 2, "targets": 1, "fab_targets": 1,
                                 "fab_steps": 2, "square_queries": 5}},
}


def is_data_template(name: str) -> bool:
    return DATA in name


def data_label(root: str) -> str:
    """The folder name as a suite name: a plain name that can name a folder under --runs."""
    name = Path(root).expanduser().resolve().name
    for suffix in (".tar.gz", ".tgz", ".tar"):
        name = name.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "images"


def data_summary(suite: Suite, data) -> str:
    """What the suite's data holds, inferred from it (one line for the leaderboard)."""
    shape = data.input_shape
    colour = {1: "grey", 3: "RGB"}.get(shape[0], f"{shape[0]}-channel") if len(shape) == 3 else "vectors"
    classes = data.classes
    names = ", ".join(classes[:10]) + (f", … ({len(classes) - 10} more)" if len(classes) > 10 else "")
    flips = {"none": "none", "crop": f"random crop (padding {suite.recipe.crop_padding}), no flips",
             "crop_flip": f"random crop (padding {suite.recipe.crop_padding}) and horizontal flips"}
    return (f"image folder `{data_label(suite.dataset.root)}` ({suite.dataset.root}): {len(classes)} classes "
            f"({names}); {'×'.join(map(str, shape))} {colour} images; {data.train_x.shape[0]:,} train / "
            f"{data.val_x.shape[0]:,} validation (a stratified {suite.dataset.val_fraction:g} of train/) / "
            f"{data.test_x.shape[0]:,} test images; augmentation: {flips[suite.recipe.augment]}")


def named_after_data(suite: Suite) -> Suite:
    """A ``{data}`` template suite filled in from its data folder (any other suite unchanged)."""
    texts = (suite.description, *suite.paper_differences)
    if not is_data_template(suite.name) and not any(DATA_SUMMARY in t for t in texts):
        return suite
    if suite.dataset.root is None:
        raise BenchError(f"suite {suite.name.replace(DATA, '<data>')!r} is named after its data folder and needs "
                         f"--data-root DIR (an image folder: DIR/train/<class>/<images>, DIR/test/<class>/<images>)")
    from bench.data import load_dataset
    data = load_dataset(suite.dataset)   # decoded once into the decode cache; the runs read it from there
    summary = data_summary(suite, data)
    label = data_label(suite.dataset.root)
    return suite.replace(name=suite.name.replace(DATA, label),
                         description=suite.description.replace(DATA_SUMMARY, summary).replace(DATA, label),
                         paper_differences=tuple(t.replace(DATA_SUMMARY, summary).replace(DATA, label)
                                                 for t in suite.paper_differences))


def smoke_suite(suite: Suite) -> Suite:
    """``suite`` at smoke scale (see the module docstring), filed as ``<name>-smoke``."""
    recipe, dataset = suite.recipe, suite.dataset
    overrides = [f"seeds=[{suite.seeds[0]}]", f"lrs=[{suite.lrs[0]!r}]",
                 f"recipe.epochs={SMOKE_EPOCHS}", "recipe.log_every=1", "recipe.checkpoint_every=1",
                 "recipe.lr_decay_start=1", "recipe.lr_decay_every=1",
                 f"dataset.limit_train={min(dataset.limit_train or SMOKE_TRAIN, SMOKE_TRAIN)}",
                 f"dataset.limit_test={min(dataset.limit_test or SMOKE_TEST, SMOKE_TEST)}",
                 f"evaluation.subset_size={min(suite.evaluation.subset_size, SMOKE_SUBSET)}"]
    if recipe.epoch_steps is not None:
        overrides.append(f"recipe.epoch_steps={min(recipe.epoch_steps, SMOKE_EPOCH_STEPS)}")
    smoke = suite.with_overrides(overrides)
    settings = dict(smoke.evaluation.settings)
    if "attacks" in smoke.evaluation.evaluators:
        settings["attacks"] = SMOKE_ATTACKS
    if "reliability" in smoke.evaluation.evaluators:
        settings["reliability"] = {**settings.get("reliability", {}), "convergence_inputs": 10}
    smoke = smoke.replace(evaluation=dataclasses.replace(smoke.evaluation, settings=settings))
    steps = (f"{SMOKE_EPOCHS} epochs of {smoke.recipe.epoch_steps} optimizer steps" if smoke.recipe.epoch_steps
             else f"{SMOKE_EPOCHS} passes over the training subset")
    note = (f"SMOKE RUN (bench run --smoke): suite {suite.name} at a few minutes' scale — {steps}, "
            f"{smoke.dataset.limit_train:,} training and {smoke.dataset.limit_test:,} test images, attacks on "
            f"{smoke.evaluation.subset_size} inputs with a few steps each, 1 seed, 1 learning rate. It checks that every stage runs; "
            f"its numbers say nothing about the plugins")
    return smoke.replace(name=f"{suite.name}-smoke", description=f"{note}. {suite.description}".strip(),
                         paper_differences=(note, *suite.paper_differences))
