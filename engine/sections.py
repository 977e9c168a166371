"""The building blocks of every params section (the engine's, each task's, the data options): a strict, frozen
pydantic model that refuses unknown keys, and the constrained number types. A leaf module: it imports nothing of the
project, so any package may build its own sections on it."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)


PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
