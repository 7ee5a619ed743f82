"""Tests of rotviz.report.figures on real skimage images (astronaut, chelsea) downscaled to 128."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from matplotlib.figure import Figure
from skimage import data, filters
from skimage.color import rgb2gray
from skimage.transform import resize

from rotviz.errors import RotvizError
from rotviz.report.charts import saliency_heatmap_plotly, sweep_plotly
from rotviz.report.figures import (
    Q_LABEL,
    figure_bytes,
    mask_with_boxes,
    overlay,
    save_figure,
    sweep_figure,
    trained_vs_random_figure,
)
from rotviz.scores.metrics import Absolute, Percentile, box_mask, threshold_sweep

BOXES = np.array([[40.0, 10.0, 90.0, 70.0], [10.5, 80.0, 30.0, 120.0]])


def _small(img: np.ndarray) -> np.ndarray:
    return (resize(img, (128, 128), anti_aliasing=True) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return _small(data.astronaut())


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return _small(data.chelsea())


def _edge_map(img: np.ndarray, scale: float) -> np.ndarray:
    """A saliency-like map: edge magnitude of the image, times a scale."""
    return filters.sobel(rgb2gray(img)) * scale


@pytest.fixture(scope="module")
def panel(astronaut):
    s_t = _edge_map(astronaut, 1e-2)
    s_r = _edge_map(astronaut, 3e-3) + 1e-4
    b = box_mask(BOXES, (128, 128))
    thr = Percentile(90)
    return astronaut, s_t, s_r, thr.mask(s_t), thr.mask(s_r), b


def test_overlay_returns_mappable_with_requested_scale(chelsea):
    s = _edge_map(chelsea, 1.0)
    im = overlay(chelsea, s)
    assert isinstance(im.figure, Figure)
    assert im.get_clim() == pytest.approx((s.min(), s.max()))
    assert im.get_alpha() == 0.5 and im.get_cmap().name == "inferno"
    im2 = overlay(np.moveaxis(chelsea, -1, 0), s, vmin=0.0, vmax=2.0, cmap="viridis")  # CHW input
    assert im2.get_clim() == (0.0, 2.0) and im2.get_cmap().name == "viridis"
    assert len(im2.axes.get_images()) == 2  # photo + map
    with pytest.raises(RotvizError, match="must match"):
        overlay(chelsea, s[:64])


def test_mask_with_boxes_tints_mask_and_outlines_boxes(chelsea):
    m = box_mask([[0, 0, 64, 32]], (128, 128))
    ax = mask_with_boxes(chelsea, m, BOXES)
    assert len(ax.patches) == 2
    x0, y0 = ax.patches[0].get_xy()
    assert (x0, y0, ax.patches[0].get_width(), ax.patches[0].get_height()) == (40, 10, 50, 60)
    tint = ax.get_images()[1].get_array()
    assert tint[..., 3][m].min() > 0 and tint[..., 3][~m].max() == 0
    assert ax.get_images()[0].get_extent() == [0, 128, 128, 0]  # pixel (r, c) covers [c, c+1)


def test_trained_vs_random_figure_panels_titles_and_shared_scale(panel):
    img, s_t, s_r, m_t, m_r, _ = panel
    fig = trained_vs_random_figure(
        img,
        BOXES,
        s_t,
        s_r,
        m_t,
        m_r,
        0.287,
        0.0,
        title="astronaut",
        threshold=Percentile(90).describe(),
    )
    assert len(fig.axes) == 5  # 4 panels + one colorbar
    panels = fig.axes[:4]
    titles = [ax.get_title() for ax in panels]
    assert all("28.7%" in t for t in titles[0::2]) and all("0.0%" in t for t in titles[1::2])
    assert sum(Q_LABEL in t for t in titles) == 2
    assert "pct:90" in fig.get_suptitle() and "astronaut" in fig.get_suptitle()
    clims = [ax.get_images()[1].get_clim() for ax in (panels[0], panels[1])]
    assert clims[0] == clims[1]
    assert clims[0] == pytest.approx((min(s_t.min(), s_r.min()), max(s_t.max(), s_r.max())))
    colorbars = [ax for ax in fig.axes if ax not in panels]
    assert len(colorbars) == 1


def test_trained_vs_random_figure_nan_q_shows_no_boxes(panel):
    img, s_t, s_r, m_t, m_r, _ = panel
    fig = trained_vs_random_figure(img, np.zeros((0, 4)), s_t, s_r, m_t, m_r, float("nan"), None)
    titles = [ax.get_title() for ax in fig.axes[:4]]
    assert all("n/a (no boxes)" in t for t in titles) and not any("nan" in t for t in titles)


def test_sweep_figure_and_plotly(panel):
    img, s_t, s_r, _, _, b = panel
    lams, pcts = np.logspace(-5, -1, 9), [50, 75, 90, 95, 99]
    df_t = threshold_sweep([s_t], [b], lambdas=lams, percentiles=pcts)
    df_r = threshold_sweep([s_r], [b], lambdas=lams, percentiles=pcts)
    fig = sweep_figure(df_t, df_r)
    assert len(fig.axes) == 2
    assert fig.axes[0].get_xscale() == "log" and fig.axes[1].get_xscale() == "linear"
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0].startswith("trained (AUC") and labels[1].startswith("random (AUC")
    np.testing.assert_allclose(
        fig.axes[0].lines[0].get_ydata(), df_t[df_t.kind == "absolute"].mean_q
    )
    assert len(sweep_figure(df_t[df_t.kind == "percentile"]).axes) == 1
    pfig = sweep_plotly(df_t, df_r)
    assert len(pfig.data) == 4 and pfig.layout.xaxis.type == "log"
    hfig = saliency_heatmap_plotly(s_t, img, title="t")
    assert [t.type for t in hfig.data] == ["image", "heatmap"]
    assert hfig.data[1].zmax == pytest.approx(s_t.max())


def test_save_figure_writes_valid_png_svg_pdf(tmp_path, panel):
    img, s_t, s_r, m_t, m_r, _ = panel
    q = Absolute(1e-3)
    fig = trained_vs_random_figure(img, BOXES, s_t, s_r, m_t, m_r, 0.5, 0.1, threshold=q.describe())
    paths = save_figure(fig, tmp_path / "sub" / "panel_lam8e-4.0")
    assert [p.name for p in paths] == [
        "panel_lam8e-4.0.png",
        "panel_lam8e-4.0.svg",
        "panel_lam8e-4.0.pdf",
    ]
    png, svg, pdf = (p.read_bytes() for p in paths)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    assert ET.fromstring(svg).tag.endswith("svg")
    assert pdf.startswith(b"%PDF") and pdf.rstrip().endswith(b"%%EOF")
    assert not list((tmp_path / "sub").glob("*.tmp"))


def test_figure_bytes_is_reproducible_and_checks_format(chelsea):
    fig = overlay(chelsea, _edge_map(chelsea, 1.0)).figure
    for fmt in ("svg", "pdf", "png"):
        assert figure_bytes(fig, fmt) == figure_bytes(fig, fmt)
    with pytest.raises(RotvizError, match="png, svg, pdf"):
        figure_bytes(fig, "jpg")


def test_builders_do_not_register_pyplot_figures(panel):
    import matplotlib.pyplot as plt

    img, s_t, s_r, m_t, m_r, _ = panel
    before = plt.get_fignums()
    for _ in range(3):
        trained_vs_random_figure(img, BOXES, s_t, s_r, m_t, m_r, 0.3, 0.1)
        overlay(img, s_t)
    assert plt.get_fignums() == before
