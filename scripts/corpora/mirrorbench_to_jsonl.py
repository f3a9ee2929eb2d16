"""Convert MirrorBench's released Chatbot Arena human / user-proxy conversations into the workbench's
JSONL import format (the ``conversations.jsonl`` that ``workbench import jsonl`` reads).

Source: github.com/SAP/mirrorbench (Apache-2.0), a checkout or any copy of its tree holding
``scratch_pad/data/chatbot_arena/chatbot_arena_mirror.jsonl`` (the real Chatbot Arena users'
conversations with their task descriptions) and
``scratch_pad/human_corr/runs/chatbot_arena_mirror-gemini-2.5-pro-user-gpt-4o-assistant-claude-4-sonnet-judge/``
(``gteval_labeled.json`` and ``pi_pairwise_labeled.json`` + ``pi_pairwise_judge_scores.json``: pairs of a
real conversation and its mirror played by the gemini-2.5-pro user proxy against gpt-4o, with people's
labels).

Every real conversation becomes a human conversation (participant: the Arena judge id), every
distinct proxy conversation an agent conversation, a digital twin of the real one it mirrors (same
scenario ``chatbot_arena`` and task context: the task description MirrorBench gave the proxy). The
people's labels go into the agent conversation's ``meta``.

    python scripts/corpora/mirrorbench_to_jsonl.py ROOT OUT_DIR
    workbench import jsonl OUT_DIR --study mirrorbench

Standard library only. Bad input: one line on stderr, exit 2, nothing written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HUMANS = Path("scratch_pad/data/chatbot_arena/chatbot_arena_mirror.jsonl")
RUN = Path(
    "scratch_pad/human_corr/runs/chatbot_arena_mirror-gemini-2.5-pro-user-gpt-4o-assistant-claude-4-sonnet-judge"
)
PROXY_MODEL = "google/gemini-2.5-pro"  # the user proxy of this run (its directory name)
PROXY_ASSISTANT = "openai/gpt-4o"  # the assistant the proxy talked to
STUDY = "mirrorbench"
SCENARIO = "chatbot_arena"


class BadInput(Exception):
    pass


def _load_json(path: Path):
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{path} not found: give the root of a SAP/mirrorbench checkout") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not valid UTF-8 JSON ({exc})") from None


def _messages(turns, where: str) -> list[dict]:
    if not isinstance(turns, list) or not turns:
        raise BadInput(f"{where}: no turns")
    out = []
    for t in turns:
        if not isinstance(t, dict) or t.get("role") not in ("user", "assistant"):
            raise BadInput(f"{where}: a turn is not a user/assistant message")
        if not isinstance(t.get("content"), str):
            raise BadInput(f"{where}: a turn has no text")
        out.append({"role": t["role"], "content": t["content"]})
    return out


def _conversation_id(sample_id: str) -> str:
    # "proxy:...|metric:judge/gteval|0::<question id>::<arena model>" -> "<question id>::<arena model>"
    return sample_id.rsplit("|", 1)[-1].split("::", 1)[1]


def read_humans(root: Path) -> dict[str, dict]:
    """The real conversations by MirrorBench conversation id."""
    path = root / HUMANS
    if not path.is_file():
        raise BadInput(f"{path} not found: give the root of a SAP/mirrorbench checkout")
    humans = {}
    for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            cid, meta = rec["conversation_id"], rec.get("metadata") or {}
            humans[cid] = {
                "messages": _messages(rec["turns"], f"{path.name}:{n}"),
                "task": rec["task_description"],
                "judge": meta.get("judge"),
                "model": meta.get("selected_model") or "unknown",
                "winner": meta.get("arena_winner"),
            }
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise BadInput(f"{path.name}:{n}: not a MirrorBench conversation record ({exc})") from None
    return humans


def read_proxies(root: Path) -> dict[str, dict]:
    """The proxy conversations by the id of the real conversation they mirror, with the people's
    labels of the pairs they appear in."""
    proxies: dict[str, dict] = {}
    for s in _load_json(root / RUN / "gteval_labeled.json"):
        cid = _conversation_id(s["sample_id"])
        p = proxies.setdefault(cid, {"messages": _messages(s["synthetic_conversation"], s["sample_id"])})
        p["real"] = _messages(s["real_conversation"], s["sample_id"])
        p["gteval_human_label"] = s.get("human_label")
    truth = {
        s["sample_id"]: s["ground_truth_synthetic_slot"]
        for s in _load_json(root / RUN / "pi_pairwise_judge_scores.json")
    }
    for s in _load_json(root / RUN / "pi_pairwise_labeled.json"):
        slot = truth.get(s["sample_id"])
        if slot not in ("A", "B"):
            raise BadInput(f"{s['sample_id']}: no ground-truth slot in pi_pairwise_judge_scores.json")
        cid = _conversation_id(s["sample_id"])
        conv, real = (s["conversation_a"], s["conversation_b"])[:: 1 if slot == "A" else -1]
        p = proxies.setdefault(cid, {"messages": _messages(conv, s["sample_id"])})
        p["real"] = _messages(real, s["sample_id"])
        label = s.get("human_label")
        # the people's blind pick of the more human-like user: the proxy, the real person, or a tie
        p["pi_human_pick"] = "tie" if label == "Tie" else ("proxy" if label == slot else "real")
    return proxies


def _line(cid: str, kind: str, messages, task: str, assistant: str, **extra) -> dict:
    return {
        "id": f"{kind}:{cid}",
        "external_id": f"mirrorbench:{kind}:{cid}",
        "study": STUDY,
        "user_kind": "human" if kind == "real" else "agent",
        "scenario": SCENARIO,
        "scenario_info": {"name": "Chatbot Arena (MirrorBench mirror)"},
        "language": "en",
        "task_context": {"text": task, "language": "en", "source": "imported"},
        "assistant": {"model": assistant},
        "messages": messages,
        **extra,
    }


def convert(root: Path) -> list[dict]:
    humans = read_humans(root)
    proxies = read_proxies(root)
    for cid, p in sorted(proxies.items()):
        # The released mirror file holds 195 of the run's real conversations; the others come from
        # the labelled pairs, without the Arena judge id and the task description.
        if cid not in humans:
            humans[cid] = {
                "messages": p["real"],
                "task": f"Chatbot Arena conversation {cid} (task description not released)",
                "judge": None,
                "model": cid.split("::", 1)[1],
                "winner": None,
            }
    lines = []
    for cid, h in humans.items():
        extra = {"participant": h["judge"]} if h["judge"] else {}
        lines.append(
            _line(
                cid,
                "real",
                h["messages"],
                h["task"],
                f"chatbot-arena/{h['model']}",
                wave="human",
                meta={"mirrorbench_id": cid, "arena_winner": h["winner"], "from_pairs": not h["judge"]},
                **extra,
            )
        )
    for cid, p in sorted(proxies.items()):
        meta = {"mirrorbench_id": cid, **{k: v for k, v in p.items() if k not in ("messages", "real")}}
        lines.append(
            _line(
                cid,
                "proxy",
                p["messages"],
                humans[cid]["task"],
                PROXY_ASSISTANT,
                simulator={"model": PROXY_MODEL, "name": "mirrorbench gemini-2.5-pro user proxy"},
                wave="agent",
                twin_of=f"real:{cid}",
                meta=meta,
            )
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path, help="root of a SAP/mirrorbench checkout")
    ap.add_argument("out", type=Path, help="folder to write conversations.jsonl into (created)")
    args = ap.parse_args(argv)
    try:
        lines = convert(args.root.expanduser())
        out = args.out.expanduser()
        out.mkdir(parents=True, exist_ok=True)
        target = out / "conversations.jsonl"
        tmp = target.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), "utf-8")
        tmp.replace(target)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
        return 2
    n_h = sum(x["user_kind"] == "human" for x in lines)
    print(f"wrote {target}: {n_h} human and {len(lines) - n_h} simulated conversations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
