import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "workflow"))


def pytest_collection_modifyitems(config, items):
    """The modules that run the real Snakefile (marker ``workflow``, minutes each) first, in file order: `make
    test`'s pytest-xdist workers (--dist loadfile --no-loadscope-reorder) then start on the longest modules and
    share the short ones at the end, instead of one worker being left with a long module last."""
    items.sort(key=lambda item: item.get_closest_marker("workflow") is None)


def counting(monkeypatch, module, name: str) -> list[str]:
    """Wrap ``module.name(path, kind)`` so each call records ``path.name`` (the real function still runs)."""
    calls: list[str] = []
    real = getattr(module, name)

    def wrapper(path, kind):
        calls.append(path.name)
        return real(path, kind)

    monkeypatch.setattr(module, name, wrapper)
    return calls
