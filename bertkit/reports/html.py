"""A self-contained HTML report: metrics tables, embedded plots, the run config."""

import base64
import datetime as _dt
import enum
import html
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from bertkit.fileio import write_text_atomic
from bertkit.reports.plots import PathLike

logger = logging.getLogger(__name__)


# task names and head registry names (bertkit.config.HeadType values) → plot family
_CSS = """
:root{--bg:#f5f7fb;--card:#fff;--fg:#1f2937;--muted:#6b7280;--line:#e5e7eb;--accent:#2563eb;
--wbg:#fff7ed;--wfg:#9a3412}
@media (prefers-color-scheme:dark){:root{--bg:#0f172a;--card:#1e293b;--fg:#e2e8f0;--muted:#94a3b8;
--line:#334155;--accent:#60a5fa;--wbg:#431407;--wfg:#fdba74}img{background:#fff}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);line-height:1.5;
font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
.container{max-width:1100px;margin:0 auto;padding:32px 20px 48px}
header h1{margin:0 0 4px;font-size:1.8rem} header p{margin:0 0 24px;color:var(--muted);font-size:.9rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:20px 24px;
margin-bottom:20px;box-shadow:0 1px 3px rgba(0,0,0,.06);overflow-x:auto}
.card h2{margin:0 0 14px;font-size:1.15rem;border-left:4px solid var(--accent);padding-left:10px}
table{border-collapse:collapse;font-size:.9rem;min-width:40%;margin-bottom:12px}
th,td{padding:6px 12px;border-bottom:1px solid var(--line);text-align:left}
th{font-weight:600;color:var(--muted)}
td.num{text-align:right;font-variant-numeric:tabular-nums;font-family:ui-monospace,Menlo,Consolas,monospace}
.figures{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:20px} figure{margin:0}
figure img{max-width:100%;height:auto;border-radius:8px;border:1px solid var(--line)}
figcaption{color:var(--muted);font-size:.85rem;margin-top:6px;text-align:center}
pre{margin:0;font-size:.82rem;white-space:pre-wrap;word-break:break-word;
font-family:ui-monospace,Menlo,Consolas,monospace}
.warn{background:var(--wbg);color:var(--wfg);border-radius:8px;padding:8px 12px;margin:6px 0}
footer{color:var(--muted);font-size:.8rem;text-align:center;margin-top:28px}
"""

_MISSING = object()
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
         ".svg": "image/svg+xml", ".webp": "image/webp"}  # fmt: skip


def _scalar(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        value = value.value
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    return value


def _fmt(value: Any) -> tuple[str, bool]:
    """Return (escaped text, is_numeric) for one metric value."""
    value = _scalar(value)
    if value is None:
        return "—", False
    if isinstance(value, bool):
        return str(value), False
    if isinstance(value, int):
        return str(value), True
    if isinstance(value, float):
        return ("nan" if math.isnan(value) else f"{value:.4f}"), True
    if isinstance(value, list | tuple | np.ndarray):
        items = [_fmt(v)[0] for v in list(value)[:12]]
        more = ", …" if len(value) > 12 else ""
        return "[" + ", ".join(items) + more + "]", False
    return html.escape(str(value)), False


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _table(columns: Sequence[str], rows: Mapping[str, Sequence[Any]]) -> str:
    """An HTML table: a ``metric`` column, then one column per entry of ``columns`` (missing cells → —)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("metric", *columns))
    body = []
    for name, values in rows.items():
        cells = []
        for value in values:
            text, num = ("—", False) if value is _MISSING else _fmt(value)
            cells.append(f'<td class="num">{text}</td>' if num else f"<td>{text}</td>")
        body.append(f"<tr><td>{html.escape(name)}</td>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _metrics_html(metrics: Mapping[str, Any]) -> str:
    if not metrics:
        return "<p>No metrics recorded.</p>"
    splits = {str(k): _flatten(v) for k, v in metrics.items() if isinstance(v, Mapping)}
    flat = {str(k): [v] for k, v in metrics.items() if not isinstance(v, Mapping)}
    parts = []
    if splits:
        names = dict.fromkeys(k for s in splits.values() for k in s)
        parts.append(_table(list(splits), {n: [s.get(n, _MISSING) for s in splits.values()] for n in names}))
    if flat:
        parts.append(_table(["value"], flat))
    return "".join(parts)


def _yaml_safe(obj: Any) -> Any:
    obj = _scalar(obj)
    if isinstance(obj, Mapping):
        return {str(k): _yaml_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset | np.ndarray):
        return [_yaml_safe(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else list(obj))]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        try:
            return _yaml_safe(obj.to_dict())
        except Exception:  # noqa: BLE001 - fall back to str below
            pass
    return str(obj)


_CAPTIONS = {"history": "Training history", "per_label_f1": "Per-label F1"}


def _caption(path: Path) -> str:
    if path.stem in _CAPTIONS:
        return _CAPTIONS[path.stem]
    words = path.stem.replace("_", " ").replace("-", " ").strip()
    return (words[:1].upper() + words[1:]) if words else path.name


def _image_html(path: Path) -> str:
    mime = _MIME.get(path.suffix.lower(), "image/png")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    cap = html.escape(_caption(path))
    return f'<figure><img src="data:{mime};base64,{data}" alt="{cap}"><figcaption>{cap}</figcaption></figure>'


def write_html_report(
    run_dir: PathLike,
    *,
    title: str,
    metrics: Mapping[str, Any],
    config: Mapping[str, Any] | None,
    images: Sequence[Path | str],
    extra_tables: Mapping[str, pd.DataFrame] | None = None,
    warnings: Sequence[str] | None = None,
) -> Path:
    """Write ``run_dir/report.html``: one self-contained file (inline CSS, base64 images, no JS or links).

    Args:
        run_dir: Run folder; created if missing.
        title: Page title and heading.
        metrics: Flat ``{name: value}`` or nested ``{split: {name: value}}`` (one table column per split;
            deeper nesting is flattened to dotted names). Floats are shown with 4 decimals.
        config: The run configuration, shown as YAML.
        images: Image files to embed; captions come from the file names. A missing or unreadable image
            becomes a warning line rather than an error.
        extra_tables: Optional titled DataFrames (e.g. per-class metrics), rendered escaped.
        warnings: Optional warning lines (e.g. plots that failed) shown near the top.

    Returns:
        The path of the written report.
    """
    run_dir = Path(run_dir)
    notes = [str(w) for w in (warnings or [])]
    figures: list[str] = []
    for img in images:
        path = Path(img)
        try:
            figures.append(_image_html(path))
        except OSError as exc:
            notes.append(f"image {path.name} could not be embedded: {exc}")

    sections: list[str] = []
    if notes:
        warn = "".join(f'<div class="warn">⚠ {html.escape(n)}</div>' for n in notes)
        sections.append(f'<section class="card"><h2>Warnings</h2>{warn}</section>')
    sections.append(f'<section class="card"><h2>Metrics</h2>{_metrics_html(metrics)}</section>')
    if figures:
        sections.append(
            f'<section class="card"><h2>Plots</h2><div class="figures">{"".join(figures)}</div></section>'
        )
    for name, table in (extra_tables or {}).items():
        body = table.to_html(escape=True, border=0, max_rows=200, float_format=lambda v: f"{v:.4f}")
        sections.append(f'<section class="card"><h2>{html.escape(str(name))}</h2>{body}</section>')
    cfg_text = yaml.safe_dump(_yaml_safe(dict(config or {})), sort_keys=False, allow_unicode=True)
    sections.append(
        f'<section class="card"><h2>Configuration</h2><pre>{html.escape(cfg_text)}</pre></section>'
    )

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    esc_title = html.escape(title)
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<title>{esc_title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<div class="container">\n'
        f"<header><h1>{esc_title}</h1>"
        f"<p>Run folder: {html.escape(str(run_dir))} · generated {stamp}</p></header>\n"
        + "\n".join(sections)
        + "\n<footer>Generated by bertkit</footer>\n</div>\n</body>\n</html>\n"
    )
    out = run_dir / "report.html"
    write_text_atomic(out, page)
    return out


# --------------------------------------------------------------------------------------------- one call
