"""Maps the source folders onto the import names: framework/ -> fp, plugins/ -> fp.plugins."""
from setuptools import find_packages, setup

packages = (["fp"] + [f"fp.{p}" for p in find_packages("framework")]
            + ["fp.plugins"] + [f"fp.plugins.{p}" for p in find_packages("plugins")])
setup(packages=packages, package_dir={"fp": "framework", "fp.plugins": "plugins"},
      package_data={"fp.plugins": ["**/*.gin"]})
