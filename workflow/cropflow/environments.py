"""The per-step conda environments (envs/*.yaml): every rule's file present, and their pins equal to the pip pins
of the test/demo virtual environment (pyproject.toml, requirements/constraints.txt), so the two cannot drift."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

#: conda-forge package name -> PyPI distribution of the same software and version numbers
CONDA_TO_PYPI = {
    "matplotlib-base": "matplotlib",  # matplotlib without the Qt backend
    "gdal": "gdal-wheel",  # GDAL's Python bindings with the library bundled in the wheel
}
#: conda packages left unpinned on purpose: the installer itself
UNPINNED = {"pip"}


@dataclass(frozen=True)
class RuleEnv:
    """A rule's conda directive as Snakemake holds it: a path relative to the rule file, or None."""

    rule: str
    conda_env: str | None
    rule_file: str
    runs_a_command: bool


def normalise(name: str) -> str:
    """A PyPI project name in its canonical form (PEP 503), extras dropped."""
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()


def env_file(env: RuleEnv) -> Path | None:
    """The environment file a rule names, resolved as Snakemake resolves it (relative to the rule file)."""
    if env.conda_env is None:
        return None
    path = Path(env.conda_env)
    return path if path.is_absolute() else Path(env.rule_file).parent / path


def conda_env_problems(envs: Iterable[RuleEnv]) -> list[str]:
    """One message per rule that runs a command without a conda environment, or names a file that is missing."""
    problems = []
    for env in envs:
        if not env.runs_a_command:
            continue
        path = env_file(env)
        if path is None:
            problems.append(f"rule {env.rule} ({env.rule_file}) declares no conda: environment; add one from envs/")
        elif not path.is_file():
            problems.append(f"rule {env.rule} ({env.rule_file}): conda environment file {os.path.normpath(path)} "
                            f"not found; restore it (git checkout -- envs/) or fix the rule's conda: path")
    return problems


_CONDA_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+)\s*(?:=\s*(?P<version>[^=\s]+))?$")
_PIP_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+(?:\[[^\]]*\])?)\s*(?:==\s*(?P<version>\S+))?$")


@dataclass(frozen=True)
class EnvPins:
    """An environment file's packages: conda (conda-forge names) and its pip section (PyPI names)."""

    conda: dict[str, str | None]
    pip: dict[str, str | None]


def env_pins(path: str | os.PathLike) -> EnvPins:
    """Parse a conda environment file; a package without a version maps to None. Raises ValueError naming the file
    and the entry for a dependency it cannot read."""
    with open(path) as f:
        spec = yaml.safe_load(f)
    conda: dict[str, str | None] = {}
    pip: dict[str, str | None] = {}
    for dep in spec.get("dependencies", []):
        if isinstance(dep, dict):
            for entry in dep.get("pip", []):
                m = _PIP_SPEC.match(entry.strip())
                if m is None:
                    raise ValueError(f"{path}: pip entry {entry!r} is not 'name==version'")
                pip[normalise(m["name"])] = m["version"]
            continue
        m = _CONDA_SPEC.match(str(dep).strip())
        if m is None:
            raise ValueError(f"{path}: dependency {dep!r} is not 'name =version'")
        conda[m["name"].lower()] = m["version"]
    return EnvPins(conda=conda, pip=pip)


def pip_pins(*paths: str | os.PathLike) -> dict[str, str]:
    """Exact pins ('name==version') of a constraints file or of pyproject.toml's dependency lists, by canonical
    name; a name pinned twice to different versions raises ValueError naming both files."""
    pins: dict[str, tuple[str, str]] = {}
    for path in paths:
        for name, version in _requirements(Path(path)):
            key = normalise(name)
            if key in pins and pins[key][0] != version:
                raise ValueError(f"{name} is pinned to {pins[key][0]} in {pins[key][1]} and to {version} in {path}")
            pins[key] = (version, str(path))
    return {k: v for k, (v, _) in pins.items()}


def _requirements(path: Path) -> list[tuple[str, str]]:
    if path.suffix == ".toml":
        import tomllib

        project = tomllib.loads(path.read_text())["project"]
        lines = list(project.get("dependencies", []))
        for extra in project.get("optional-dependencies", {}).values():
            lines += extra
    else:
        lines = path.read_text().splitlines()
    out = []
    for line in lines:
        line = line.split("#")[0].split(";")[0].strip()
        m = re.match(r"^([A-Za-z0-9_.\-]+(?:\[[^\]]*\])?)\s*==\s*([^\s,]+)$", line)
        if m:
            out.append((m[1], m[2]))
    return out


def pin_drift(env_paths: Iterable[str | os.PathLike], pins: dict[str, str]) -> list[str]:
    """Every difference between the environment files and the pip pins: a package in both places pinned to other
    versions, and a conda package without an exact version (x.y.z)."""
    problems = []
    for path in env_paths:
        env = env_pins(path)
        for name, version in env.conda.items():
            if name in UNPINNED:
                continue
            if version is None or not re.fullmatch(r"\d+(\.\d+){2,}", version):
                problems.append(f"{path}: {name} ={version or ''} is not an exact version (name =x.y.z)")
                continue
            pypi = normalise(CONDA_TO_PYPI.get(name, name))
            if pypi in pins and pins[pypi] != version:
                problems.append(f"{path}: {name} ={version} but the pip pins say {pypi}=={pins[pypi]}")
        for name, version in env.pip.items():
            if version is None:
                problems.append(f"{path}: pip package {name} has no ==version")
            elif name in pins and pins[name] != version:
                problems.append(f"{path}: pip {name}=={version} but the pip pins say {name}=={pins[name]}")
    return problems
