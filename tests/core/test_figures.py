"""sigtune._figures.save_tight: the pixels of tight_layout + savefig, drawn once."""

from __future__ import annotations

import io
from typing import Any

import pytest

from sigtune._figures import save_tight

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
plt = pytest.importorskip("matplotlib.pyplot")


def _figure() -> Any:
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([1, 2, 3], [1e-3, 1e-1, 10.0], label="a curve")
    ax.set_yscale("log")
    ax.set_xlabel(r"$\hat\mu$ with a long label that needs room")
    ax.legend()
    return fig


def test_save_tight_gives_the_pixels_of_tight_layout_and_savefig_with_one_draw() -> None:
    reference = _figure()
    expected = io.BytesIO()
    reference.tight_layout()
    reference.savefig(expected, format="png", dpi=60)
    plt.close(reference)

    fig = _figure()
    draws = 0
    draw = fig.draw

    def counting_draw(renderer: Any) -> None:
        nonlocal draws
        draws += 1
        draw(renderer)

    fig.draw = counting_draw
    got = io.BytesIO()
    save_tight(fig, got, format="png", dpi=60)
    plt.close(fig)
    assert got.getvalue() == expected.getvalue()
    assert draws == 1
    assert fig.get_layout_engine() is None
