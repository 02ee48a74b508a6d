"""The notebook widgets (ipywidgets): thin views over the core objects."""

from orcd_toolkit.notebook.widgets.generate import GenerateWidget
from orcd_toolkit.notebook.widgets.kernel_bench import KernelBench
from orcd_toolkit.notebook.widgets.model_card import ModelCard
from orcd_toolkit.notebook.widgets.tokenizer_view import TokenizerView

__all__ = ["GenerateWidget", "KernelBench", "ModelCard", "TokenizerView"]
