"""Execute a notebook headless and print its text outputs (used on the GPU machine).

    python tests/notebook/run_notebook.py notebooks/03_kernels.ipynb executed.ipynb

Exits 1 if a cell raised (nbclient stops at the first error and the output names it).
"""

from __future__ import annotations

import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def main(src: str, dst: str) -> int:
    nb = nbformat.read(src, as_version=4)
    t0 = time.monotonic()
    rc = 0
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3").execute()
    except CellExecutionError as exc:
        print(f"cell failed: {str(exc)[-2000:]}")
        rc = 1
    print(f"executed {src} in {time.monotonic() - t0:.1f} s (rc {rc})")
    nbformat.write(nb, dst)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                print(out["text"], end="")
            elif out.get("output_type") == "error":
                print("ERROR", out["ename"], out["evalue"])
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
