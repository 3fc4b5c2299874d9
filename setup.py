"""Build hook: ship the example specs the installed commands need (``ntkdsl demo``).

The specs live once, in ``examples/specs``; a wheel gets a copy as package data
``ntkdsl/specs/*.ntk``, which ``ntkdsl.demo`` reads with ``importlib.resources``
(a checkout reads ``examples/specs`` directly). Everything else is in
``pyproject.toml``.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SPECS = Path(__file__).parent / "examples" / "specs"


class BuildWithSpecs(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "ntkdsl" / "specs"
        target.mkdir(parents=True, exist_ok=True)
        for spec in sorted(SPECS.glob("*.ntk")):
            self.copy_file(str(spec), str(target / spec.name))


setup(cmdclass={"build_py": BuildWithSpecs})
