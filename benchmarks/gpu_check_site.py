"""sitecustomize for the folder gpu_check.sh installs carried wheels into (`--target`, put on
PYTHONPATH): Python runs the .pth files of site folders only, so this runs that folder's
(numba-cuda's redirects numba.cuda to itself), then the sitecustomize it shadows, if any."""
import importlib.machinery
import importlib.util
import os
import site
import sys

_here = os.path.dirname(os.path.abspath(__file__))
site.addsitedir(_here)
_spec = importlib.machinery.PathFinder.find_spec(
    "sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != _here])
if _spec is not None:
    _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
