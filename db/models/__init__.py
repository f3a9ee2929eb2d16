"""All tables. Each area keeps its tables in its own module here; every module is imported so
that ``SQLModel.metadata`` (and so Alembic) sees the whole schema."""

import importlib
import pkgutil

from db.models.core import (  # noqa: F401
    Annotator,
    Assignment,
    AssistantConfig,
    Condition,
    Conversation,
    Label,
    LabelSource,
    LLMCall,
    Participant,
    Profile,
    QuestionnaireResponse,
    Scenario,
    SimulationRun,
    SimulatorConfig,
    Study,
    TaskContext,
    Turn,
)

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "core":
        importlib.import_module(f"{__name__}.{_mod.name}")
