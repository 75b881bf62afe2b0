"""Compare the training runs of an MLflow experiment: which hyper-parameters won?

One row per run (mlflow.search_runs), sorted by the primary metric (eval/fd for images,
eval/reverse_kl for 2-D points; lower is better, unscored runs last), with the key parameters
(loss, optimiser and learning rates, epochs, architecture), the eval/* metrics, the data version,
status, duration and, for failed runs, the reason (tag ganflow.failure).

Output: a fixed-width text table (printed), an HTML report with the table and a bar chart of the
primary metric (PNG, also written beside the HTML). Both files are logged as artifacts of a small
"comparison" run in the SAME experiment (tag ganflow.kind=comparison, run name comparison-<time>),
so the MLflow UI shows the report next to the runs it compares; comparison runs are left out of
every comparison."""
from __future__ import annotations

import base64
import html
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from flows.conventions import EVAL_PREFIX, PROBE_PREFIX, completed
from flows.env import RunPaths
from flows.errors import UserError
from flows.servers import redact, redact_text

KIND_TAG = "ganflow.kind"
COMPARISON = "comparison"
# Metrics shown beside the primary one in the text table (the HTML shows every eval/* metric).
SECONDARY = {"fd": ("fd_ratio", "kid", "class_coverage"), "reverse_kl": ("modes", "high_quality")}


@dataclass
class Comparison:
    experiment: str
    metric: str  # the run metric sorted by, e.g. eval/reverse_kl
    rows: list[dict]
    text: str
    html: Path
    png: Path | None
    run_id: str | None = None  # the MLflow comparison run holding the report
    eval_metrics: list[str] = field(default_factory=list)
    curves: Path | None = None  # every run's validation score over epochs, one chart


def compare(paths: RunPaths, experiment: str | None = None, out: Path | None = None, params=None,
            log: bool = True) -> Comparison:
    """Build the comparison of `experiment` (default: params.experiment); call after env.configure()."""
    import mlflow
    from mlflow.tracking import MlflowClient

    if experiment is None:
        if params is None:
            raise UserError("no experiment given: pass --experiment or run in a workspace with params.yaml")
        experiment = params.experiment
    client = MlflowClient()
    try:
        exp = client.get_experiment_by_name(experiment)
    except Exception as exc:  # noqa: BLE001 - an unreachable server: say which one
        raise UserError(f"cannot reach MLflow at {redact(mlflow.get_tracking_uri())}: {redact_text(str(exc))}") from None
    if exp is None:
        known = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise UserError(f"no MLflow experiment named {experiment!r} in {redact(mlflow.get_tracking_uri())} "
                        f"(experiments: {known})")
    runs = [r for r in mlflow.search_runs(experiment_ids=[exp.experiment_id], output_format="list")
            if r.data.tags.get(KIND_TAG) != COMPARISON]
    if not runs:
        raise UserError(f"experiment {experiment!r} has no training runs yet (run `ganflow pipeline` first)")

    primary = _primary(runs, params)
    metric = f"{EVAL_PREFIX}{primary}"
    eval_metrics = sorted({k for r in runs for k in r.data.metrics if k.startswith(EVAL_PREFIX)},
                          key=lambda k: (k != metric, k))
    rows = sorted((_row(r, primary) for r in runs), key=lambda row: _sort_key(row, metric))
    for i, row in enumerate(rows, 1):
        row["rank"] = i if _finite(row["metrics"].get(metric)) else None

    out = Path(out) if out is not None else paths.home / "comparisons" / f"{experiment}.html"
    if out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out must be an .html file, got {out.name!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    png = _bar_chart(rows, metric, experiment, out.with_suffix(".png"))
    curves = _curves_chart(client, rows, primary, experiment, out.with_name(out.stem + "-curves.png"))
    for row in rows:
        row["samples_png"] = _samples_png(client, row["run_id"])
    text = render_text(rows, metric, experiment)
    out.write_text(render_html(rows, metric, eval_metrics, experiment, png, curves))
    result = Comparison(experiment, metric, rows, text, out, png, None, eval_metrics, curves)
    if log:
        result.run_id = _log(client, exp.experiment_id, result)
    return result


def _primary(runs, params) -> str:
    from flows.evaluate import PRIMARY

    present = {k for r in runs for k in r.data.metrics}
    for name in (PRIMARY["images"], PRIMARY["points"]):
        if f"{EVAL_PREFIX}{name}" in present:
            return name
    if params is not None:  # nothing scored yet: go by the workspace's data
        return PRIMARY["points" if params.data.is_points else "images"]
    return PRIMARY["images"]


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _sort_key(row: dict, metric: str):
    value = row["metrics"].get(metric)
    return (0, value, row["start"]) if _finite(value) else (1, 0.0, row["start"])


def _row(run, primary: str) -> dict:
    p, tags, info = run.data.params, run.data.tags, run.info
    duration = ((info.end_time or time.time() * 1000) - info.start_time) / 1000 if info.start_time else None
    arch = p.get("model.arch", "-")  # logged resolved (the recipe's); "auto" only in runs from before recipes
    return {
        "run": info.run_name or info.run_id[:8],
        "run_id": info.run_id,
        "status": info.status,
        "loss": p.get("loss.name") or tags.get("ganflow.loss", "-"),
        "recipe": p.get("recipe") or tags.get("ganflow.recipe", "-"),
        "optim": _optim(p),
        "epochs": p.get("train.epochs", "-"),
        "arch": arch,
        "data_version": tags.get("ganflow.data_version", "-"),
        "duration_s": duration,
        "running": info.status == "RUNNING" and not info.end_time,
        "start": info.start_time or 0,
        "metrics": {k: v for k, v in run.data.metrics.items() if k.startswith(EVAL_PREFIX)},
        "failure": tags.get("ganflow.failure", ""),
    }


def _optim(p: dict) -> str:
    """The optimiser as the run logged it: params are validated with the recipe's values filled in before
    they are logged, so optim.* are the values training used (runs logged before recipes show "-")."""
    def value(key: str) -> str:
        v = p.get(f"optim.{key}")
        return "-" if v in (None, "None") else v

    lr_g, lr_d = value("lr_g"), value("lr_d")
    return f"{value('optimizer')} {lr_g if lr_g == lr_d else f'{lr_g}/{lr_d}'}"


def _duration(row: dict) -> str:
    s = row["duration_s"]
    if s is None:
        return "-"
    text = f"{s:.0f}s" if s < 60 else f"{int(s // 60)}m{int(s % 60):02d}s" if s < 3600 else \
        f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return text + (" (running)" if row["running"] else "")


def _num(x) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}" if _finite(x) else str(x)


def _columns(metric: str) -> list[tuple[str, callable]]:
    name = metric.removeprefix(EVAL_PREFIX)
    cols = [
        ("#", lambda r: str(r["rank"]) if r["rank"] else "-"),
        ("run", lambda r: r["run"]),
        ("status", lambda r: r["status"]),
        (metric + " (lower=better)", lambda r: _num(r["metrics"].get(metric))),
    ]
    cols += [(m, lambda r, m=m: _num(r["metrics"].get(f"{EVAL_PREFIX}{m}"))) for m in SECONDARY.get(name, ())]
    cols += [
        ("loss", lambda r: r["loss"]),
        ("optimizer lr", lambda r: r["optim"]),
        ("epochs", lambda r: str(r["epochs"])),
        ("arch", lambda r: r["arch"]),
        ("data", lambda r: r["data_version"][:8]),
        ("duration", _duration),
    ]
    return cols


def render_text(rows: list[dict], metric: str, experiment: str, note_width: int = 60) -> str:
    cols = _columns(metric)
    cells = [[fn(r) for _, fn in cols] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (h, _) in enumerate(cols)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    out = [f"experiment {experiment}: {len(rows)} runs, sorted by {metric} (lower is better)",
           line([h for h, _ in cols]), line(["-" * w for w in widths])]
    for row, c in zip(rows, cells):
        out.append(line(c))
        if row["failure"]:
            reason = " ".join(row["failure"].split())
            more = "..." if len(reason) > note_width else ""
            out.append(f"    ^ {row['status'].lower()}: {reason[:note_width]}{more}")
    return "\n".join(out)


def _img(png: Path | bytes | None, alt: str, width: str = "") -> str:
    """An <img> with the picture inside the page (data URI): the report opens from disk, no server."""
    if png is None:
        return ""
    data = base64.b64encode(png if isinstance(png, bytes) else png.read_bytes()).decode()
    size = f' style="width:{width}"' if width else ""
    return f'<img alt="{html.escape(alt)}"{size} src="data:image/png;base64,{data}">'


def render_html(rows: list[dict], metric: str, eval_metrics: list[str], experiment: str,
                png: Path | None, curves: Path | None = None) -> str:
    e = html.escape
    heads = ["#", "run", "status", "samples", *eval_metrics, "recipe", "loss", "optimizer lr", "epochs", "arch",
             "data version", "wall time", "run id", "failure"]
    body = []
    for r in rows:
        cells = [e(str(r["rank"] or "-")), e(r["run"]), e(r["status"]),
                 _img(r.get("samples_png"), f"samples of {r['run']}", "160px") or "-",
                 *(e(_num(r["metrics"].get(m))) for m in eval_metrics),
                 e(r["recipe"]), e(r["loss"]), e(r["optim"]), e(str(r["epochs"])), e(r["arch"]), e(r["data_version"]),
                 e(_duration(r)), e(r["run_id"]), e(r["failure"])]
        cls = ' class="failed"' if r["status"] == "FAILED" else (' class="best"' if r["rank"] == 1 else "")
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    chart = "".join(f"<p>{_img(path, alt)}</p>" for path, alt in
                    ((png, f"{metric} per run"), (curves, "validation score over epochs")) if path is not None)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>ganflow: {e(experiment)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f0f0f0; }}
tr.failed td {{ background: #fde8e8; }}
tr.best td {{ background: #e6f5e6; }}
td:last-child {{ max-width: 40em; white-space: pre-wrap; }}
</style></head><body>
<h1>Experiment {e(experiment)}</h1>
<p>{len(rows)} runs sorted by <b>{e(metric)}</b> (lower is better; unscored runs last).
Generated {e(time.strftime('%Y-%m-%d %H:%M:%S'))}.</p>
{chart}
<table>
<tr>{''.join(f'<th>{e(h)}</th>' for h in heads)}</tr>
{chr(10).join(body)}
</table></body></html>
"""


def _bar_chart(rows: list[dict], metric: str, experiment: str, path: Path) -> Path | None:
    scored = [r for r in rows if _finite(r["metrics"].get(metric))]
    if not scored:
        return None
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    labels = [r["run"] for r in scored]
    values = [r["metrics"][metric] for r in scored]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.35 * len(scored)))
    colors = ["tab:green"] + ["tab:blue"] * (len(scored) - 1)
    ax.barh(range(len(scored)), values, color=colors)
    ax.set_yticks(range(len(scored)), labels, fontsize=8)
    ax.invert_yaxis()  # best on top
    ax.set_xlabel(f"{metric} (lower is better)")
    ax.set_title(f"{experiment}: {metric} per run")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _samples_png(client, run_id: str) -> bytes | None:
    """The run's sample grid (images/samples.png, beside real holdout images), if it logged one."""
    import tempfile

    try:
        with tempfile.TemporaryDirectory() as tmp:
            return Path(client.download_artifacts(run_id, "images/samples.png", tmp)).read_bytes()
    except Exception:  # noqa: BLE001 - failed or unfinished runs have none
        return None


def _curves_chart(client, rows: list[dict], primary: str, experiment: str, path: Path) -> Path | None:
    """Every run's per-epoch probe of the primary metric (on the validation split) on one chart."""
    key = f"{PROBE_PREFIX}{primary}"
    series = []
    for r in rows:
        history = sorted(client.get_metric_history(r["run_id"], key), key=lambda m: m.step)
        if history:
            series.append((r["run"], [completed(m.step) for m in history], [m.value for m in history]))
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, x, y in series:
        ax.plot(x, y, marker=".", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{primary} on the validation split (lower is better)")
    ax.set_title(f"{experiment}: {primary} over training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _log(client, experiment_id: str, result: Comparison) -> str:
    run = client.create_run(experiment_id, run_name=time.strftime("comparison-%Y%m%d-%H%M%S"),
                            tags={KIND_TAG: COMPARISON, "ganflow.primary_metric": result.metric,
                                  "ganflow.compared_runs": str(len(result.rows))})
    run_id = run.info.run_id
    try:
        client.log_artifact(run_id, str(result.html), COMPARISON)
        for png in (result.png, result.curves):
            if png is not None:
                client.log_artifact(run_id, str(png), COMPARISON)
        best = next((r for r in result.rows if r["rank"] == 1), None)
        if best is not None:
            client.set_tag(run_id, "ganflow.best_run", best["run_id"])
            client.log_metric(run_id, f"best/{result.metric.removeprefix(EVAL_PREFIX)}", best["metrics"][result.metric])
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id
