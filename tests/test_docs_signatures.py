"""The docs name each function's arguments as the code does: a keyword call written from
README.md or docs/*.md (not the design log) must work."""
import glob
import importlib
import inspect
import os
import pkgutil
import re

import pytest

import langevin_sim
import langevin_sim.analysis as analysis
import langevin_sim.scan as scan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = [langevin_sim] + [importlib.import_module(f"{pkg.__name__}.{m.name}")
                            for pkg in (analysis, scan) for m in pkgutil.iter_modules(pkg.__path__)]
DOCS = [os.path.join(ROOT, "README.md")] + sorted(
    p for p in glob.glob(os.path.join(ROOT, "docs", "*.md")) if "design_changes" not in p)


def documented_calls(path: str):
    """(line number, callable, argument names) of each `name(args)` in a doc whose name is a
    function or class of the package's top level, its analysis or scan modules (annotations,
    defaults, nested brackets and placeholders such as DIR dropped)."""
    for n, line in enumerate(open(path, encoding="utf-8"), 1):
        for m in re.finditer(r"`([A-Za-z_][\w.]*)\(([^`]*?)\)(?: -> [^`]*)?`", line):
            name = m.group(1).split(".")[-1]
            fn = next((getattr(mod, name) for mod in MODULES
                       if inspect.isfunction(getattr(mod, name, None))
                       or inspect.isclass(getattr(mod, name, None))), None)
            args = re.sub(r"\[[^\]]*\]|\([^()]*\)", "", m.group(2))   # Mapping[str, Run], (0, 0)
            names = [a.split("=")[0].split(":")[0].strip() for a in args.split(",")]
            names = [a for a in names if a.isidentifier() and not a.isupper()]
            if fn is not None and names:
                yield n, fn, names


@pytest.mark.parametrize("doc", DOCS, ids=os.path.basename)
def test_docs_name_the_arguments_the_functions_take(doc):
    wrong = []
    for n, fn, names in documented_calls(doc):
        params = inspect.signature(fn).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            continue
        if set(names) - set(params):
            wrong.append(f"line {n}: {fn.__name__}({', '.join(names)}) takes {list(params)}")
    assert not wrong, "\n".join(wrong)


def test_the_analysis_doc_is_checked():
    assert len(list(documented_calls(os.path.join(ROOT, "docs", "analysis.md")))) >= 30
