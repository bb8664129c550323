"""Callables named in the sweeper's config by dotted path (custom_search_space, budget.measure)."""

import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, Optional

from hydra.utils import get_method


def locate_callable(path: str, task_function: Optional[Any] = None) -> Any:
    """A dotted path; a leading dot (as hydra-optuna-sweeper's examples write it) means a file beside the app's script."""
    if not path.startswith(".") or task_function is None:
        return get_method(path)
    module_name, _, name = path[1:].rpartition(".")
    folder = Path(inspect.getfile(task_function)).resolve().parent
    file = folder / f"{module_name.replace('.', '/')}.py"
    main = sys.modules.get("__main__")
    if main is not None and Path(getattr(main, "__file__", "") or ".").resolve() == file:
        return getattr(main, name)  # the app's own script, already running
    spec = importlib.util.spec_from_file_location(module_name.replace("-", "_"), file)
    if spec is None or not file.is_file():
        raise ImportError(f"no file {file}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)
