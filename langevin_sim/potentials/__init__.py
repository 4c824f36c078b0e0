"""Loss surfaces. Each class states its formula, normalization, units and shapes."""
from .base import REGISTRY, Potential
from .double_well import DoubleWell
from .linear_regression import LinearRegression
from .quadratic import Quadratic

__all__ = ["REGISTRY", "Potential", "DoubleWell", "LinearRegression", "Quadratic"]
from .toynets import ClassifierMLP, ModularArithmeticMLP, TeacherStudentMLP  # noqa: E402

__all__ += ["ClassifierMLP", "ModularArithmeticMLP", "TeacherStudentMLP"]
from .pspin import SphericalPSpin  # noqa: E402

__all__ += ["SphericalPSpin"]
from .manifolds import ScaleSymmetric, Valley  # noqa: E402
from .multiwell import MultiWell, ShiftedMultiWell  # noqa: E402

__all__ += ["ScaleSymmetric", "Valley", "MultiWell", "ShiftedMultiWell"]
