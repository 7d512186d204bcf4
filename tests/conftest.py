import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "workflow"))


def counting(monkeypatch, module, name: str) -> list[str]:
    """Wrap ``module.name(path, kind)`` so each call records ``path.name`` (the real function still runs)."""
    calls: list[str] = []
    real = getattr(module, name)

    def wrapper(path, kind):
        calls.append(path.name)
        return real(path, kind)

    monkeypatch.setattr(module, name, wrapper)
    return calls
