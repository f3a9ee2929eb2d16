"""The simulated user: its prompts from a condition, and robust parsing of its structured replies."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from workbench.llm.base import extract_json
from workbench.simulation.templates import PromptTemplate

END_MARKERS = ("[END]", "<END>", "[end]", "<end>", "[END_CONVERSATION]")
_MESSAGE_RE = re.compile(r'"message"\s*:\s*"((?:[^"\\]|\\.)*)', re.S)
_END_RE = re.compile(r'"end"\s*:\s*(true|"true"|1)\b', re.I)


@dataclass
class UserReply:
    message: str
    end: bool
    parse: str  # json | partial_json | marker | text


def parse_user_reply(text: str) -> UserReply:
    """Read ``{"message": ..., "end": bool}``; fall back for weak models that break the format."""
    text = (text or "").strip()
    try:
        data = extract_json(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), (str, type(None))):
        end = data.get("end", False)
        end = end if isinstance(end, bool) else str(end).strip().lower() in ("true", "1", "yes")
        return UserReply((data.get("message") or "").strip(), end, "json")
    m = _MESSAGE_RE.search(text)
    if m:  # truncated or slightly broken JSON: take the message text we can see
        try:
            msg = json.loads(f'"{m.group(1)}"')
        except json.JSONDecodeError:
            msg = m.group(1)
        return UserReply(msg.strip(), bool(_END_RE.search(text)), "partial_json")
    for marker in END_MARKERS:
        if marker in text:
            return UserReply(text.replace(marker, "").strip(), True, "marker")
    return UserReply(text, False, "text")


@dataclass
class UserContext:
    """What the simulated user knows: the condition's task card and persona, in its language."""

    task: str
    profile: str | None
    language: str = "en"
    min_turns: int = 2
    max_turns: int = 10
    goal_reminder_every: int | None = None  # remind of the task every k assistant replies
    meta: dict = field(default_factory=dict)


class SimulatedUser:
    """Builds the simulator's view of the conversation (roles swapped) from the shared turns."""

    def __init__(self, template: PromptTemplate, ctx: UserContext):
        self.template = template
        self.ctx = ctx
        lang = ctx.language
        self.system = template.part(
            lang,
            "system",
            profile=ctx.profile or template.part(lang, "no_profile"),
            task=ctx.task,
            min_turns=ctx.min_turns,
            max_turns=ctx.max_turns,
        )

    def messages(self, turns: list[dict], note: str | None = None) -> list[dict]:
        """``turns``: the conversation so far as {"role": "user"|"assistant", "content"}."""
        lang, ctx = self.ctx.language, self.ctx
        out = [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.template.part(lang, "opening")},
        ]
        n_assistant = 0
        for t in turns:
            if t["role"] == "user":
                # The simulator sees its own turns in the format it must keep answering in.
                out.append(
                    {
                        "role": "assistant",
                        "content": json.dumps({"message": t["content"], "end": False}, ensure_ascii=False),
                    }
                )
            else:
                n_assistant += 1
                content = t["content"]
                if ctx.goal_reminder_every and n_assistant % ctx.goal_reminder_every == 0:
                    content += "\n\n" + self.template.part(lang, "goal_reminder", task=ctx.task)
                out.append({"role": "user", "content": content})
        if note:
            if out[-1]["role"] == "user":
                out[-1] = {"role": "user", "content": out[-1]["content"] + "\n\n" + note}
            else:
                out.append({"role": "user", "content": note})
        return out

    def too_early_note(self, n_sent: int) -> str:
        return self.template.part(self.ctx.language, "too_early", n=n_sent, min_turns=self.ctx.min_turns)
