"""Building blocks of the report pages: page template, shared plotly.js, figures."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

from sigtune._figures import save_tight

__all__ = [
    "PLOTLY_JS",
    "figure_html",
    "plotly_fragment",
    "png_img",
    "write_page",
    "write_plotly_js",
]


PLOTLY_JS = "plotly.min.js"


def write_plotly_js(path: Path) -> None:
    """One plotly.js per report directory (rewritten only when its content changes)."""
    from plotly.offline import get_plotlyjs

    text = get_plotlyjs()
    if not path.exists() or path.stat().st_size != len(text.encode("utf-8")):
        path.write_text(text, encoding="utf-8")


def write_page(
    path: Path,
    title: str,
    sections: Sequence[str],
    *,
    plotly_js: str | None,
    nav: Sequence[tuple[str, str]] = (),
) -> None:
    if plotly_js == "inline":
        from plotly.offline import get_plotlyjs

        head_js = f'<script type="text/javascript">{get_plotlyjs()}</script>'
    elif plotly_js:
        head_js = f'<script src="{html.escape(plotly_js)}"></script>'
    else:
        head_js = ""
    links = " | ".join(f"<a href='{html.escape(f)}'>{html.escape(label)}</a>" for f, label in nav)
    document = _PAGE.format(
        title=html.escape(title),
        heading=html.escape(title),
        head_js=head_js,
        nav=f"<nav>{links}</nav>" if len(nav) > 1 else "",
        body="\n".join(sections),
        generated=html.escape(_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
        optuna_version=html.escape(optuna.__version__),
    )
    path.write_text(document, encoding="utf-8")


def figure_html(kind: str, caption: str, fragment: str) -> str:
    """One captioned figure of a report page."""
    return (
        f"<figure class='plot' data-kind='{html.escape(kind)}'><figcaption>"
        f"{html.escape(caption)}</figcaption>{fragment}</figure>"
    )


def plotly_fragment(fig: Any) -> str:
    """A plotly figure as an HTML fragment that uses the page's plotly.js."""
    return str(fig.to_html(full_html=False, include_plotlyjs=False))


def png_img(figure: Any, caption: str, size: tuple[float, float] | None = (9, 5)) -> str:
    """A matplotlib figure as an embedded PNG ``<img>`` (the figure is closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        if size is not None:
            figure.set_size_inches(*size)
        save_tight(figure, buffer, format="png", dpi=90)
    finally:
        plt.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"<img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'/>"


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
{head_js}
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
h1 {{ font-size: 1.6em; }} h2 {{ border-bottom: 1px solid #ddd; padding-bottom: .2em; }}
table {{ border-collapse: collapse; font-size: .9em; margin: .5em 0; }}
th, td {{ border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }}
th {{ background: #f4f4f4; position: sticky; top: 0; }}
table.kv thead {{ display: none; }}
table.trials {{ display: block; overflow: auto; max-height: 40em; }}
figure.plot {{ margin: 1em 0; }} figcaption {{ font-weight: 600; margin-bottom: .3em; }}
.warn {{ color: #a33; }} nav {{ margin-bottom: 1em; }}
pre {{ background: #f7f7f7; padding: .5em; overflow: auto; font-size: .8em; }}
figure.plot img {{ max-width: 100%; }} footer {{ color: #888; font-size: .8em; margin-top: 2em; }}
</style>
</head>
<body>
{nav}
<h1>{heading}</h1>
{body}
<footer>Generated {generated} by sigtune with Optuna {optuna_version}.</footer>
</body>
</html>
"""
