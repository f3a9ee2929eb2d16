"""What an import did: counts, files skipped and why."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

# progress(done, total): called as files are written; the CLI draws a bar with it.
Progress = Callable[[int, int], None] | None


@dataclass
class ImportReport:
    study: str
    study_id: int | None = None
    files: int = 0  # files (or lines) seen
    imported: int = 0  # conversations written now
    existing: int = 0  # already in the study (re-import): not written again
    malformed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    conversations_by_kind: Counter = field(default_factory=Counter)
    turns: int = 0
    labels: int = 0
    questionnaire_responses: int = 0
    created: Counter = field(default_factory=Counter)  # scenarios, task_contexts, profiles, ...
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def skipped(self) -> int:
        return len(self.malformed)

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.conversations_by_kind.items())) or "none"
        made = ", ".join(f"{k} {v}" for k, v in sorted(self.created.items()) if v) or "nothing else"
        lines = [
            f"Study {self.study!r}: {self.imported} conversations imported ({kinds}), "
            f"{self.existing} already present, {self.skipped} malformed skipped, of {self.files} files "
            f"in {self.seconds:.1f} s.",
            f"Written: {self.turns} turns, {self.labels} labels, {self.questionnaire_responses} "
            f"questionnaire answers; created {made}.",
        ]
        for path, reason in self.malformed[:50]:
            lines.append(f"  malformed: {path}: {reason}")
        if len(self.malformed) > 50:
            lines.append(f"  ... and {len(self.malformed) - 50} more malformed files")
        for w in self.warnings[:20]:
            lines.append(f"  warning: {w}")
        return "\n".join(lines)
