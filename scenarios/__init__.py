"""Scenario schema, loader and the bundled scenario packs.

``load_library()`` validates the bundled packs (``scenarios/packs/``) plus ``extra_dirs`` (the
shells pass the ``WORKBENCH_SCENARIO_DIRS`` directories); ``sync_library(session)`` upserts them into the database;
``profile_fields()`` gives the profile questionnaire.
"""

from scenarios.loader import (
    ENV_SCENARIO_DIRS,
    PACKS_DIR,
    Library,
    LibraryError,
    Problem,
    SyncReport,
    load_files,
    load_library,
    profile_fields,
    sync_library,
)
from scenarios.schema import ProfileField, ProfileSpec, ScenarioSpec, TaskContextSpec

REFERENCE_SCENARIOS = ("travel_planning", "recipe_planning", "preparing_gifts", "skills_learning_planning")

__all__ = [
    "ENV_SCENARIO_DIRS",
    "PACKS_DIR",
    "REFERENCE_SCENARIOS",
    "Library",
    "LibraryError",
    "Problem",
    "SyncReport",
    "load_files",
    "load_library",
    "profile_fields",
    "sync_library",
    "ProfileField",
    "ProfileSpec",
    "ScenarioSpec",
    "TaskContextSpec",
]
