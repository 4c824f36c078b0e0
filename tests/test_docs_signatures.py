"""docs/analysis.md names each analysis function's arguments as the code does (a keyword
call written from the doc must work)."""
import importlib
import inspect
import os
import pkgutil
import re

import langevin_sim.analysis as analysis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = [analysis] + [importlib.import_module(f"{analysis.__name__}.{m.name}")
                        for m in pkgutil.iter_modules(analysis.__path__)]


def documented_calls(path: str):
    """(line number, name, argument names) of each `name(args)` in a doc whose name is a
    function of langevin_sim.analysis (type annotations and defaults stripped)."""
    for n, line in enumerate(open(path, encoding="utf-8"), 1):
        for m in re.finditer(r"`([a-z_][a-z0-9_]*)\(([^`]*?)\)(?: -> [^`]*)?`", line):
            fn = next((getattr(mod, m.group(1)) for mod in MODULES
                       if inspect.isfunction(getattr(mod, m.group(1), None))), None)
            args = re.sub(r"\[[^\]]*\]|\([^()]*\)", "", m.group(2))  # Mapping[str, Run], (0, 0)
            names = [a.split("=")[0].split(":")[0].strip() for a in args.split(",")]
            names = [a for a in names if a and a not in ("...", "*") and not a.startswith("*")]
            if fn is not None and names:
                yield n, fn, names


def test_analysis_doc_names_the_arguments_the_functions_take():
    calls = list(documented_calls(os.path.join(ROOT, "docs", "analysis.md")))
    assert len(calls) >= 30
    wrong = [f"line {n}: {fn.__name__}({', '.join(names)}) takes "
             f"{list(inspect.signature(fn).parameters)}" for n, fn, names in calls
             if set(names) - set(inspect.signature(fn).parameters)]
    assert not wrong, "\n".join(wrong)
