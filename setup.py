"""Package discovery for the design card's layout.

kernels/ and server/ are top-level folders (DESIGN.md §2) but must not install as top-level
packages named ``kernels`` / ``server``, which would collide in anyone's site-packages. They are
mapped to ``orcd_toolkit.kernels`` and ``orcd_toolkit.server``; sub-packages follow the mapping.
Everything else lives in pyproject.toml.
"""

from setuptools import find_packages, setup

MAPPED = {"kernels": "orcd_toolkit.kernels", "server": "orcd_toolkit.server"}

packages = find_packages(include=["orcd_toolkit", "orcd_toolkit.*"])
for folder, name in MAPPED.items():
    packages += [name + p[len(folder):] for p in find_packages(include=[folder, folder + ".*"])]

setup(
    packages=packages,
    package_dir={"orcd_toolkit": "orcd_toolkit", **{v: k for k, v in MAPPED.items()}},
)
