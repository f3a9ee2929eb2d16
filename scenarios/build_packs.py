"""Generate the bundled scenario packs from the released RecLLMSim templates (run once; output committed).

    python -m scenarios.build_packs [--dataset ../shared/datasets/recllmsim] [--out scenarios/packs]

Reads ``RecUserSim-data/task_context_*.xlsx`` (columns Type, Prompt, Key, Option1-4; slots ``[KEY]``
and conditional slots ``[KEY:{"value": "text", ...}]``), expands every template into the Cartesian
product of its slot options in row order (first slot outermost: that order reproduces the
reference's ``task_context_id``), adds our own Chinese templates with parallel options, the Chinese
task cards the human participants saw, the 100-profile pool and the profile questionnaire fields.
The dataset itself is not copied: only task-card texts, profiles and option lists derived from it.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = REPO.parent / "shared" / "datasets" / "recllmsim"
DEFAULT_OUT = Path(__file__).resolve().parent / "packs"

# Reference folder / template names -> our scenario keys
TYPE_KEYS = {
    "travel planning": "travel_planning",
    "new travel planning": "travel_planning",
    "recipe planning": "recipe_planning",
    "preparing gifts": "preparing_gifts",
    "skills learning planning": "skills_learning_planning",
    "choosing restaurant": "restaurant_choice",
}
ZH_FOLDERS = {
    "旅行规划": "travel_planning",
    "菜谱规划": "recipe_planning",
    "礼物准备": "preparing_gifts",
    "技能学习规划": "skills_learning_planning",
}

SCENARIOS = {
    "travel_planning": dict(
        names={"en": "Travel planning", "zh": "旅行规划"},
        in_reference=True,
        description={
            "en": "Plan a trip with the assistant: destination, accommodation, transport and itinerary.",
            "zh": "与助手一起规划一次旅行：目的地、住宿、交通和行程。",
        },
        aspects=[
            ("destination", "Destination", "目的地"),
            ("accommodation", "Accommodation", "住宿"),
            ("transport", "Transport", "交通"),
        ],
    ),
    "recipe_planning": dict(
        names={"en": "Recipe planning", "zh": "菜谱规划"},
        in_reference=True,
        description={
            "en": "Plan a meal at home: the recipes, the ingredients and the cooking method and order.",
            "zh": "规划一顿家常饭：菜谱、食材以及烹饪方法和顺序。",
        },
        aspects=[
            ("recipe", "Recipe", "菜谱"),
            ("ingredients", "Ingredients", "食材"),
            ("cooking_method_order", "Cooking method and order", "烹饪方法与顺序"),
        ],
    ),
    "preparing_gifts": dict(
        names={"en": "Preparing gifts", "zh": "礼物准备"},
        in_reference=True,
        description={
            "en": "Choose a gift for someone: the gift option, the price and where to buy or how to make it.",
            "zh": "为某人挑选礼物：礼物选项、价格以及购买平台或制作方式。",
        },
        aspects=[
            ("option", "Gift option", "礼物选项"),
            ("price", "Price", "价格"),
            ("platform", "Platform", "购买平台"),
        ],
    ),
    "skills_learning_planning": dict(
        names={"en": "Skills-learning planning", "zh": "技能学习规划"},
        in_reference=True,
        description={
            "en": "Plan how to learn a skill: time planning, relevant information and resources, skill choice.",
            "zh": "规划如何学习一项技能：时间安排、相关信息与资源、技能选择。",
        },
        aspects=[
            ("time_planning", "Time planning", "时间规划"),
            ("relevant_information", "Relevant information", "相关信息"),
            ("skill_choice", "Skill choice", "技能选择"),
        ],
    ),
    "restaurant_choice": dict(
        names={"en": "Choosing a restaurant", "zh": "餐厅选择"},
        in_reference=False,
        description={
            "en": "Choose a restaurant and dishes (in the reference templates, not run by the reference).",
            "zh": "选择餐厅和菜品（参考研究的模板中有，但未实际运行）。",
        },
        aspects=[
            ("restaurant", "Restaurant", "餐厅"),
            ("dishes", "Dishes", "菜品"),
            ("price", "Price", "价格"),
        ],
    ),
}

# Our own Chinese templates, slot for slot parallel to task_context_en.xlsx / task_context_new.xlsx.
ZH_TEMPLATES = {
    "travel planning": (
        "你计划{TIME}进行一次为期[DURATION]的旅行，[TYPE]。你希望借助LLM来完善你的旅行计划。在这次对话中，"
        "你需要安排住宿、交通和行程细节。你的最终旅行计划应尽可能全面，确保到时候能够真实地按计划出行。",
        {
            "TIME": ["今年夏天", "今年冬天"],
            "DURATION": ["两天", "七天", "三十天"],
            "TYPE": [
                "你将因工作前往新疆，并打算利用晚上的空闲时间在当地游览，因此务必不要在白天安排任何出行或景点参观",
                "这次旅行没有特定的目的地限制",
            ],
        },
    ),
    "skills learning planning": (
        "最近，由于[TARGET]。[STAGE]。现在你希望借助LLM来完成你的学习计划。在对话中，你需要完成学习进度安排、"
        "学习资源整理等。学习过程应当考虑到你现有的技能水平，符合人的学习规律。你的最终计划应尽可能完善，"
        "做到可以真实按照计划学习。",
        {
            "SKILL": ["编程语言Python", "视频剪辑技能", "法语"],
            "STAGE": [
                "你之前在这方面是初学者，没有任何基础",
                "你之前在这方面有一定经验，现在想要进行更深入的学习",
            ],
            "TARGET": [
                "工作需要，你想在一个月内完成[SKILL]的学习",
                "自身兴趣，你想用半年左右的时间学习[SKILL]",
            ],
        },
    ),
    "choosing restaurant": (
        "你想[TIME]。你打算[MODE]，[TYPE]。现在你希望借助LLM帮你选择餐厅。在对话中，你需要完成餐厅和菜品的选择。"
        "最终的选择应当符合你的消费习惯和用餐方式。",
        {
            "TIME": ["在一小时内选择一家[PLACE]附近的餐厅", "预订一家[PLACE]附近三天后用餐的餐厅"],
            "PLACE": ["清华大学"],
            "MODE": ["在餐厅堂食", "通过外卖平台点餐"],
            "TYPE": ["作为当天的工作餐", "和家里的三个人一起吃午饭", "准备和大约十位朋友举办聚会"],
        },
    ),
    "preparing gifts": (
        "最近，[REASON]。你想为他/她准备一份礼物。为此，你希望向LLM寻求建议，讨论购买或制作礼物的方案。"
        "你应确保最终预算不会过于昂贵或过于便宜，符合一般情况即可。",
        {
            "TARGET": ["老师", "奶奶", "侄子", "男朋友/女朋友"],
            "REASON": [
                "[TARGET]的生日快到了",
                '[TARGET:{"老师":"教师节","奶奶":"重阳节","侄子":"儿童节","男朋友/女朋友":"情人节"}]快到了，'
                "你想趁这个机会去看望你的[TARGET]",
                "你要去看望你的[TARGET]",
            ],
        },
    ),
    "recipe planning": (
        "你打算在家[TYPE]。[LEVEL]。因此，你想请LLM帮忙制定菜谱，确定所需的食材，并决定要做哪些菜。"
        "在规划过程中，你应当了解每道菜完整的制作流程以及合适的菜品制作顺序。",
        {
            "TYPE": [
                "为自己做一顿饭",
                "为自己和爱人做一顿饭",
                "做一顿饭并邀请三位好友一起吃",
                "做一顿饭，和大约10位好友一起庆祝你的生日",
            ],
            "LEVEL": ["你不太擅长烹饪，做饭经验有限", "你厨艺精湛，有一定的专业水平"],
        },
    ),
    "new travel planning": (
        "你正在计划一次将在[TIME]进行的[DURATION]旅行。你的目标是在LLM的帮助下完善并最终确定你的旅行计划，"
        "包括对住宿、交通和每日行程的详细安排。你的最终旅行计划应尽可能全面和现实，确保到时能够顺利实施。\n"
        "你的旅行规划应考虑以下要求中指定的目的地：[TYPE]。你还应考虑你的出发地、前往目的地的首选交通方式，"
        "以及你希望参加的具体景点或活动。请记得考虑旅行距离、旅行时间和景点开放时间等因素。",
        {
            "TIME": ["今年夏天", "12月"],
            "DURATION": ["周末", "为期两周的", "为期一个月的"],
            "TYPE": ["前往十三朝古都西安的历史文化之旅", "没有特定的目的地限制"],
        },
    ),
}
# "{TIME}" in the travel template above is a plain slot too (kept distinct only for readability)
ZH_TEMPLATES["travel planning"] = (
    ZH_TEMPLATES["travel planning"][0].replace("{TIME}", "[TIME]"),
    ZH_TEMPLATES["travel planning"][1],
)

SLOT = re.compile(r"\[([A-Z]+)(?::(\{.*?\}))?\]")

PROFILE_FIELD_NAMES = [
    ("Gender", "gender"),
    ("Age", "age"),
    ("Personality", "personality"),
    ("Occupation", "occupation"),
    ("Daily Interests and Hobbies", "daily_interests"),
    ("Travel Habits", "travel_habits"),
    ("Dining Preferences", "dining_preferences"),
    ("Spending Habits", "spending_habits"),
    ("Other Aspects", "other_aspects"),
]
FIELD_ZH = {
    "gender": "性别",
    "age": "年龄",
    "background": "专业背景",
    "personality": "性格",
    "occupation": "职业",
    "daily_interests": "日常兴趣爱好",
    "travel_habits": "旅行习惯",
    "dining_preferences": "饮食偏好",
    "spending_habits": "消费习惯",
    "other_aspects": "其他方面",
}
FIELD_EN = {
    "gender": "Gender",
    "age": "Age",
    "background": "Academic background",
    "personality": "Personality",
    "occupation": "Occupation",
    "daily_interests": "Daily interests and hobbies",
    "travel_habits": "Travel habits",
    "dining_preferences": "Dining preferences",
    "spending_habits": "Spending habits",
    "other_aspects": "Other aspects",
}
# Options found only in the human files (Chinese), translated by us.
MANUAL_EN = {
    "悲观": "Pessimistic",
    "社会科学与行为科学": "Social and behavioural sciences",
    "工程与应用科学": "Engineering and applied sciences",
    "其他": "Others",
    "信息科学与技术": "Information science and technology",
    "人文与艺术": "Humanities and arts",
    "自然科学": "Natural sciences",
    "医学与健康科学": "Medicine and health sciences",
    "交叉与前沿学科": "Interdisciplinary and frontier fields",
    "应用管理与创新领域": "Applied management and innovation",
    "男": "Male",
    "女": "Female",
}


# --------------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------------


def read_templates(xlsx: Path) -> dict[str, tuple[str, list[tuple[str, list[str]]]]]:
    """Type -> (prompt, [(slot, options), ...]) in row order."""
    import openpyxl

    ws = openpyxl.load_workbook(xlsx, read_only=True).worksheets[0]
    out: dict[str, tuple[str, list]] = {}
    current = None
    for i, row in enumerate(ws.iter_rows(values_only=True)):
        if i == 0 or not any(row):
            continue
        typ, prompt, key, *opts = row
        if typ:
            current = typ.strip()
            out[current] = (prompt, [])
        out[current][1].append((key, [o for o in opts if o is not None]))
    return out


def fill(template: str, choice: dict[str, str]) -> str:
    """Resolve [KEY] and [KEY:{json}] until none are left (options may contain slots)."""
    text = template
    for _ in range(10):
        new = SLOT.sub(
            lambda m: json.loads(m.group(2))[choice[m.group(1)]] if m.group(2) else choice[m.group(1)], text
        )
        if new == text:
            break
        text = new
    if SLOT.search(text):
        raise ValueError(f"unresolved slot in {text!r}")
    return text


def expand(prompt: str, slots: list[tuple[str, list[str]]]):
    """(id, slot choice, text) for the Cartesian product, first slot outermost."""
    keys = [k for k, _ in slots]
    for i, combo in enumerate(itertools.product(*[opts for _, opts in slots])):
        choice = dict(zip(keys, combo))
        yield i, choice, fill(prompt, choice)


def slot_values(choice: dict[str, str], prompt: str) -> dict[str, str]:
    """The choice with nested slots resolved (what the researcher reads in the pack)."""
    return {k: fill(v, choice) for k, v in choice.items()}


# --------------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------------


MAIN_TYPES = [
    "travel planning",
    "recipe planning",
    "preparing gifts",
    "skills learning planning",
    "choosing restaurant",
]
# (workbook, template types, key prefix, set, with our Chinese translation)
TEMPLATE_FAMILIES = [
    ("task_context_en.xlsx", MAIN_TYPES, "", "main", True),
    ("task_context_new.xlsx", ["new travel planning"], "new-", "new", True),
    ("task_context_en_exp.xlsx", MAIN_TYPES, "exp-", "human_exp", False),
]
# The Chinese task cards the human participants saw (both waves): (folder, set)
HUMAN_WAVES = [("real_human_user", "human_v1"), ("human_exp_V2", "human_v2")]


def build_contexts(data: Path) -> dict[str, list[dict]]:
    contexts: dict[str, list[dict]] = collections.defaultdict(list)
    for family in TEMPLATE_FAMILIES:
        for scen, tc in _family_contexts(data / "RecUserSim-data", *family):
            contexts[scen].append(tc)
    for wave, set_name in HUMAN_WAVES:
        for scen, tc in _task_card_contexts(data, wave, set_name):
            contexts[scen].append(tc)
    return contexts


def _family_contexts(base: Path, xlsx_name: str, types: list[str], prefix: str, set_name: str, with_zh: bool):
    """(scenario, context) for every slot combination of each template type: the English contexts,
    then (``with_zh``) our Chinese translations, each pointing at the other."""
    templates = read_templates(base / xlsx_name)
    for typ in types:
        prompt, slots = templates[typ]
        scen = TYPE_KEYS[typ]
        en = list(expand(prompt, slots))
        zh = None
        if with_zh:
            zprompt, zopts = ZH_TEMPLATES[typ]
            zslots = [(k, zopts[k]) for k, _ in slots]
            assert [len(o) for _, o in zslots] == [len(o) for _, o in slots], typ
            zh = list(expand(zprompt, zslots))
        reference = set_name in ("main", "new")
        for idx, (i, choice, text) in enumerate(en):
            tc = dict(
                key=f"{prefix}en-{i}",
                language="en",
                text=text,
                set=set_name,
                reference_id=i if reference else None,
                template=f"{xlsx_name}:{typ}",
                slots=slot_values(choice, prompt),
            )
            if zh:
                tc["translations"] = {"zh": zh[idx][2]}
            yield scen, tc
        for idx, (i, choice, text) in enumerate(zh or []):
            yield (
                scen,
                dict(
                    key=f"{prefix}zh-{i}",
                    language="zh",
                    text=text,
                    set=set_name,
                    reference_id=i if reference else None,
                    template=f"{xlsx_name}:{typ} (our Chinese translation)",
                    translations={"en": en[idx][2]},
                    slots=slot_values(choice, prompt),
                ),
            )


def _task_card_contexts(data: Path, wave: str, set_name: str):
    """(scenario, context) for each distinct task card of a human wave, verbatim, in sorted order."""
    texts: dict[str, set[str]] = collections.defaultdict(set)
    for f in (data / wave).glob("*/*/*.json"):
        scen = ZH_FOLDERS[f.parent.name]
        texts[scen].add(json.loads(f.read_text(encoding="utf-8"))["task_context"])
    for scen, ts in texts.items():
        for n, text in enumerate(sorted(ts)):
            yield (
                scen,
                dict(
                    key=f"{set_name.replace('_', '-')}-{n}",
                    language="zh",
                    text=text,
                    set=set_name,
                    template=f"{wave} (human participants' task cards)",
                ),
            )


def build_scenarios(data: Path, out: Path) -> None:
    contexts = build_contexts(data)
    for key, meta in SCENARIOS.items():
        doc = {
            "kind": "scenario",
            "key": key,
            "version": "1",
            "in_reference": meta["in_reference"],
            "names": meta["names"],
            "description": meta["description"],
            "source": "Generated by scenarios/build_packs.py from the RecLLMSim task-context templates "
            "(Apache-2.0); Chinese template translations are ours.",
            "aspects": [{"key": k, "names": {"en": en, "zh": zh}} for k, en, zh in meta["aspects"]],
            "task_contexts": [_clean(tc) for tc in contexts[key]],
        }
        _dump(doc, out / f"{key}.yaml")


def _clean(tc: dict) -> dict:
    order = ["key", "language", "set", "reference_id", "text", "translations", "slots", "template"]
    return {k: tc[k] for k in order if tc.get(k) not in (None, {}, [])}


def parse_pool(text: str) -> list[dict]:
    blocks = [b.strip() for b in re.split(r"\n\s*\n", text.strip()) if b.strip()]
    out = []
    for b in blocks:
        fields = {}
        for line in b.splitlines():
            m = re.match(r"\s*\d+\.\s*([^:]+):\s*(.*)$", line)
            if not m:
                raise ValueError(f"unexpected pool line {line!r}")
            name = m.group(1).strip()
            key = dict(PROFILE_FIELD_NAMES)[name]
            val = m.group(2).strip()
            fields[key] = int(val) if key == "age" and val.isdigit() else val
        out.append({"text": b, "fields": fields})
    return out


def build_pool(data: Path, out: Path) -> dict:
    pool = parse_pool(
        (data / "RecUserSim-data" / "pool" / "preference_pool_en.txt").read_text(encoding="utf-8")
    )
    zh: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    mapped: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    mismatched = 0
    for f in (data / "LLM_agent_user").glob("*/*.json"):
        d = json.loads(f.read_text(encoding="utf-8"))
        pid = d["preference_id"]
        if d["preference"].strip() != pool[pid]["text"]:
            mismatched += 1
        if d.get("preference_zh"):
            zh[pid][d["preference_zh"]] += 1
        if d.get("profile_mapped"):
            mapped[pid][json.dumps(d["profile_mapped"], ensure_ascii=False, sort_keys=True)] += 1
    if mismatched:
        raise SystemExit(
            f"{mismatched} agent files have a preference text that differs from pool[preference_id]"
        )
    names = dict(PROFILE_FIELD_NAMES)
    profiles = []
    for i, p in enumerate(pool):
        prof = {
            "key": f"pool-{i}",
            "language": "en",
            "reference_id": i,
            "fields": p["fields"],
            "text": p["text"],
        }
        if mapped[i]:
            m = json.loads(mapped[i].most_common(1)[0][0])
            prof["mapped"] = {
                names[k]: [{"en": x["en"], "zh": x["zh"]} for x in (v if isinstance(v, list) else [v])]
                for k, v in m.items()
                if k in names
            }
        if zh[i]:
            prof["translations"] = {"zh": zh[i].most_common(1)[0][0]}
        profiles.append(prof)
    _dump(
        {
            "kind": "profile_pool",
            "key": "recllmsim-pool",
            "version": "1",
            "source": "RecLLMSim RecUserSim-data/pool/preference_pool_en.txt (Apache-2.0); Chinese text and "
            "option mapping from the agent files' preference_zh / profile_mapped",
            "profiles": profiles,
        },
        out / "profile_pool.yaml",
    )
    return {"profiles": len(profiles), "with_zh": sum(1 for p in profiles if "translations" in p)}


def build_profile_fields(data: Path, out: Path) -> None:
    human: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for f in list((data / "human_exp_V2").glob("*/*/*.json")) + list(
        (data / "real_human_user").glob("*/*/*.json")
    ):
        for k, v in json.loads(f.read_text(encoding="utf-8"))["profile"].items():
            for x in v if isinstance(v, list) else [v]:
                human[k][str(x)] += 1
    pairs: dict[str, dict[str, str]] = collections.defaultdict(dict)
    names = dict(PROFILE_FIELD_NAMES)
    for f in (data / "LLM_agent_user").glob("*/*.json"):
        for k, v in json.loads(f.read_text(encoding="utf-8"))["profile_mapped"].items():
            for x in v if isinstance(v, list) else [v]:
                pairs[names[k]][x["zh"]] = x["en"]
    fields = []
    for key in [
        "gender",
        "age",
        "background",
        "personality",
        "occupation",
        "daily_interests",
        "travel_habits",
        "dining_preferences",
        "spending_habits",
        "other_aspects",
    ]:
        spec = {"key": key, "names": {"en": FIELD_EN[key], "zh": FIELD_ZH[key]}}
        if key == "age":
            spec.update(type="integer", min=12, max=99)
        elif key == "gender":
            spec.update(
                type="choice",
                options=[
                    {"value": "Male", "en": "Male", "zh": "男"},
                    {"value": "Female", "en": "Female", "zh": "女"},
                ],
            )
        else:
            # human values first (most frequent first), then values only the agents' mapping used; "Others" last
            zh_values = [v for v, _ in human[key].most_common()]
            zh_values += [v for v in pairs.get(key, {}) if v not in zh_values]
            zh_values = [v for v in zh_values if v != "其他"] + ["其他"]
            opts = []
            for v in zh_values:
                en = pairs.get(key, {}).get(v) or MANUAL_EN.get(v)
                if en is None:
                    raise SystemExit(f"no English label for {key} option {v!r}; add it to MANUAL_EN")
                opts.append({"value": en, "en": en, "zh": v})
            spec.update(
                type="choice" if key in ("occupation", "background") else "multi_choice", options=opts
            )
            if key == "background":
                spec["required"] = False  # asked in the second wave only
        fields.append(spec)
    _dump(
        {
            "kind": "profile_fields",
            "version": "1",
            "source": "Options of the RecLLMSim human profile questionnaire (profile dicts) and the agents' "
            "profile_mapped EN/ZH pairs; a few English labels are ours.",
            "fields": fields,
        },
        out / "profile_fields.yaml",
    )


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper, value: str):
    # multi-line texts as literal blocks, so the packs read like the task cards
    style = "|" if "\n" in value and not value.endswith((" ", "\t")) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(doc: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Generated by scenarios/build_packs.py -- edit the generator (or add your own pack), not this file.\n"
    path.write_text(
        header + yaml.dump(doc, Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=110),
        encoding="utf-8",
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    build_scenarios(args.dataset, args.out)
    stats = build_pool(args.dataset, args.out)
    build_profile_fields(args.dataset, args.out)
    print(
        f"wrote packs to {args.out}: {len(SCENARIOS)} scenarios, {stats['profiles']} profiles "
        f"({stats['with_zh']} with a Chinese text), profile fields"
    )


if __name__ == "__main__":
    main()
