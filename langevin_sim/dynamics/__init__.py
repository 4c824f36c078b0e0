"""Update rules. Each class states its equations; parameters are validated at construction."""
from .base import REGISTRY, Dynamics, NoiseSource
from .heun import Heun
from .langevin import OBABO, LeimkuhlerMatthews, OverdampedLangevin, UnderdampedLangevin
from .mala import MALA
from .schedules import Schedule
from .sgd import SGD

__all__ = ["REGISTRY", "Dynamics", "NoiseSource", "OverdampedLangevin", "UnderdampedLangevin",
           "Heun", "LeimkuhlerMatthews", "OBABO", "MALA", "SGD", "Schedule"]
from .adamw import AdamW  # noqa: E402

__all__ += ["AdamW"]
