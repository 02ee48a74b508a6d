"""``KernelBench``: a kernel next to its NumPy twin — timings, bandwidth, error, chart.

A view over :mod:`orcd_toolkit.notebook.bench`. Each Run appends a :class:`BenchResult`
to ``results``; the table and the small SVG chart (median time per case, log scale, NumPy
vs GPU) redraw from them. Without a GPU it runs the NumPy side only and says why.
"""

from __future__ import annotations

import math
from typing import Any

import ipywidgets as widgets
import traitlets

from orcd_toolkit.errors import OrcdError
from orcd_toolkit.notebook import bench
from orcd_toolkit.notebook.widgets._common import error_html, esc, note_html, table_html

NUMPY_COLOUR = "#4e79a7"
GPU_COLOUR = "#59a14f"


def chart_svg(results: list[bench.BenchResult], width: int = 560) -> str:
    """Horizontal bars of median time per case (log10 ms axis), NumPy above GPU."""
    if not results:
        return ""
    times = [r.numpy_ms for r in results] + [r.gpu_ms for r in results if r.gpu_ms]
    lo = math.floor(math.log10(max(min(times), 1e-4)))
    hi = math.ceil(math.log10(max(max(times), 1e-4))) + (1 if min(times) == max(times) else 0)
    hi = max(hi, lo + 1)
    left, bar_h, gap = 210, 10, 8
    plot_w = width - left - 90
    rows = []
    y = 18
    for r in results:
        rows.append(f"<text x='0' y='{y + 9}' font-size='11'>{esc(r.case.label)}</text>")
        for name, ms, colour in (("NumPy", r.numpy_ms, NUMPY_COLOUR),
                                 ("GPU", r.gpu_ms, GPU_COLOUR)):
            if ms is None:
                rows.append(f"<text x='{left}' y='{y + 9}' font-size='10' fill='#999'>"
                            f"{name}: no GPU</text>")
            else:
                frac = (math.log10(max(ms, 1e-4)) - lo) / (hi - lo)
                w = max(2.0, frac * plot_w)
                rows.append(f"<rect x='{left}' y='{y}' width='{w:.1f}' height='{bar_h}' "
                            f"fill='{colour}'><title>{name} {ms:.4f} ms</title></rect>")
                rows.append(f"<text x='{left + w + 4:.1f}' y='{y + 9}' font-size='10'>"
                            f"{ms:.3g} ms</text>")
            y += bar_h + 2
        y += gap
    ticks = []
    for e in range(lo, hi + 1):
        x = left + (e - lo) / (hi - lo) * plot_w
        ticks.append(f"<line x1='{x:.1f}' y1='12' x2='{x:.1f}' y2='{y}' stroke='#eee'/>"
                     f"<text x='{x:.1f}' y='10' font-size='9' fill='#777' "
                     f"text-anchor='middle'>{10.0 ** e:g} ms</text>")
    legend = (f"<rect x='{width - 80}' y='{y + 2}' width='10' height='8' fill='{NUMPY_COLOUR}'/>"
              f"<text x='{width - 66}' y='{y + 10}' font-size='10'>NumPy</text>"
              f"<rect x='{width - 80}' y='{y + 14}' width='10' height='8' fill='{GPU_COLOUR}'/>"
              f"<text x='{width - 66}' y='{y + 22}' font-size='10'>GPU</text>")
    return (f"<svg class='orcd-bench-chart' width='{width}' height='{y + 28}' "
            f"xmlns='http://www.w3.org/2000/svg'>{''.join(ticks)}{''.join(rows)}{legend}</svg>")


def _g(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


class KernelBench(widgets.VBox):
    """Pick an op, a shape and (for matvec) a tensor type; Run; compare with NumPy."""

    results = traitlets.List(help="BenchResult of every run, in order")
    error = traitlets.Unicode("")

    def __init__(self, op: str = "rms_norm", rows: int = 1, cols: int = 896,
                 qtype: str = "Q4_K", repeats: int = 10, **kwargs: Any) -> None:
        desc = {"description_width": "60px"}
        self.op = widgets.Dropdown(options=sorted(bench.OPS), value=op, description="op",
                                   style=desc)
        self.qtype = widgets.Dropdown(options=list(bench.QUANT_TYPES), value=qtype,
                                      description="type", style=desc)
        self.preset = widgets.Dropdown(options=["custom", *bench.PRESETS], value="custom",
                                       description="shape", style=desc)
        self.rows = widgets.BoundedIntText(value=rows, min=1, max=1 << 16, description="rows",
                                           style=desc, layout=widgets.Layout(width="160px"))
        self.cols = widgets.BoundedIntText(value=cols, min=1, max=1 << 16, description="cols",
                                           style=desc, layout=widgets.Layout(width="160px"))
        self.repeats = widgets.BoundedIntText(value=repeats, min=1, max=1000,
                                              description="repeats", style=desc,
                                              layout=widgets.Layout(width="160px"))
        self.run_button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.clear_button = widgets.Button(description="Clear", icon="trash")
        self.doc = widgets.HTML()
        self.note = widgets.HTML()
        self.error_view = widgets.HTML()
        self.table = widgets.HTML()
        self.chart = widgets.HTML()
        self.run_button.on_click(lambda _b: self.run())
        self.clear_button.on_click(lambda _b: setattr(self, "results", []))
        self.op.observe(self._on_op, names="value")
        self.preset.observe(self._on_preset, names="value")
        usable, reason = bench.gpu_available()
        self.gpu_usable = usable
        self.note.value = "" if usable else note_html(
            f"No usable GPU here ({reason}): only the NumPy reference runs; the GPU column "
            "stays empty. Run this notebook on a GPU machine to compare the kernels.")
        super().__init__([
            widgets.HBox([self.op, self.qtype, self.preset]),
            widgets.HBox([self.rows, self.cols, self.repeats, self.run_button,
                          self.clear_button]),
            self.doc, self.note, self.error_view, self.table, self.chart,
        ], **kwargs)
        self.add_class("orcd-kernel-bench")
        self._on_op({"new": self.op.value})

    def _on_op(self, change: dict[str, Any]) -> None:
        self.qtype.layout.display = None if change["new"] == "matvec" else "none"
        self.doc.value = f"<i style='font-size:12px'>{esc(bench.OPS[change['new']].doc)}</i>"

    def _on_preset(self, change: dict[str, Any]) -> None:
        if change["new"] in bench.PRESETS:
            self.rows.value, self.cols.value = bench.PRESETS[change["new"]]

    def run(self) -> bench.BenchResult | None:
        """Press Run: one case with the current settings; the result is appended."""
        self.error = ""
        try:
            case = bench.make_case(self.op.value, int(self.rows.value), int(self.cols.value),
                                   self.qtype.value)
            result = bench.run_case(case, repeats=int(self.repeats.value))
        except OrcdError as exc:
            self.error = str(exc)
            return None
        self.results = [*self.results, result]
        return result

    @traitlets.observe("error")
    def _error_changed(self, change: dict[str, Any]) -> None:
        self.error_view.value = error_html(change["new"])

    @traitlets.observe("results")
    def _results_changed(self, change: dict[str, Any]) -> None:
        res: list[bench.BenchResult] = change["new"]
        rows = [
            (r.case.label, f"{r.numpy_ms:.4f}", _g(r.gpu_ms, ".4f"), _g(r.first_call_ms, ".1f"),
             _g(r.speedup, ".1f"), f"{r.numpy_gbps:.2f}", _g(r.gpu_gbps, ".1f"),
             _g(r.nmse, ".2e"), _g(r.max_abs_err, ".2e"), r.device)
            for r in res
        ]
        self.table.value = table_html(
            ["case", "NumPy ms", "GPU ms", "GPU 1st call ms", "speed-up", "NumPy GB/s",
             "GPU GB/s", "nMSE", "max |err|", "device"], rows) if rows else ""
        self.chart.value = chart_svg(res)
