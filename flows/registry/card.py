"""Model cards: the Markdown descriptions a reader sees on the MLflow registry pages.

A version's card says what it was trained on (dataset, data version), how (recipe), how good it is (the
headline: scores beside the real-vs-real baseline and the recipe's bar), where its samples are, and what
the promotion gate decided. The registered model's description says what the model is and how to sample it."""
from __future__ import annotations

import re
import time
from collections.abc import Mapping

from flows.data.load import PROCESSED

PROMOTION = "**Promotion**"


def version_card(name: str, version: str, *, dataset: str, kind: str, shape: list[int], counts: Mapping[str, int],
                 classes: list[str], data_version: str, recipe: str, recipe_line: str, headline: str,
                 run_id: str, ray_run: str, git_sha: str, evaluator_version: str) -> str:
    what = "2-D points" if kind == "points" else "images " + "x".join(str(s) for s in shape)
    labels = "" if kind == "points" else (f", {len(classes)} classes" if len(classes) > 1 else ", unlabelled")
    return "\n".join([
        f"### {name} version {version}",
        "",
        headline,
        "",
        "| | |",
        "| --- | --- |",
        f"| data | {dataset}: {what}, {counts.get('train', 0)} training items{labels} |",
        f"| data version | `{data_version}` (DVC md5 of {PROCESSED}) |",
        f"| recipe | `{recipe}`: {recipe_line} |",
        f"| scored on | the holdout ({counts.get('holdout', 0)} items), evaluator `{evaluator_version}` |",
        f"| samples | `runs:/{run_id}/images/samples.png` (beside real holdout images; the run's Artifacts tab) |",
        f"| trained by | run `{ray_run}`, MLflow run `{run_id}`, git `{git_sha[:12]}` |",
        "",
        f"Sample it: `ganflow sample --model models:/{name}/{version} -n 64 --out grid.png`",
    ])


def with_promotion(card: str | None, summary: str) -> str:
    """The card with the gate's latest decision as its last line (an earlier one replaced)."""
    body = re.sub(rf"\n*{re.escape(PROMOTION)}.*\Z", "", card or "", flags=re.S)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return f"{body}\n\n{PROMOTION} ({stamp}): {summary}".lstrip("\n")


def model_description(name: str, dataset: str, kind: str, shape: list[int], conditional: bool,
                      classes: list[str]) -> str:
    what = "2-D points" if kind == "points" else "images " + "x".join(str(s) for s in shape) + " in [-1, 1]"
    cls = (f" Class-conditional: ask for a class by name with `--class` ({', '.join(classes[:10])}"
           f"{' ...' if len(classes) > 10 else ''}); without one, each class comes at its share of the training "
           "data." if conditional else "")
    return "\n".join([
        f"A GAN generator of {what}, trained on `{dataset}` by the ganflow pipeline.{cls}",
        "",
        "Aliases: `champion` is the version the promotion gate chose, "
        "`challenger` the last one it judged. Each version's description is its model card.",
        "",
        f"- `ganflow sample --model models:/{name}@champion -n 64 --out grid.png` "
        "(`--seed`, `--truncation T`, `--interpolate STEPS`)",
        f"- HTTP: `mlflow models serve -m models:/{name}@champion --env-manager local`, then POST "
        '`{"dataframe_records": [{"n": 16, "seed": 0}]}` to /invocations',
        f"- Python: `mlflow.pyfunc.load_model('models:/{name}@champion').predict(pd.DataFrame([{{'n': 16}}]))`",
    ])
