"""The zh-en grammar: every sentence family, generated from the lexicon in a fixed order."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .draws import _SEED, _shuffled
from .english import _article, _be, _cap, _count_phrase, _do, _have
from .lexicon import (
    _COUNTED_ITEMS,
    _COUNTS,
    _LIKED_THINGS,
    _NAMES,
    _NEEDED_THINGS,
    _OBJECTS_PERSON,
    _PERSON_ADJECTIVES,
    _PERSON_VERBS,
    _PLACE_ACTIVITIES,
    _PLACES,
    _PROFESSIONS,
    _THING_ADJECTIVES,
    _VERBS,
    CAN,
    FUTURE,
    HABIT,
    LIKE,
    PAST,
    PERMANENT,
    PROGRESSIVE,
    TEMPORARY,
    TEMPORARY_WITH_FUTURE,
    WANT,
    _activities,
    _en_number,
    _nouns,
    _Subject,
    _subjects,
    _zh_number,
)


@dataclass(frozen=True)
class _Example:
    source: str
    target: str
    key: tuple[str, ...]  # (family, "role:word", ...): the combination the split holds out whole


class _Sink:
    """Collects examples; ``stmt`` and ``ask`` add the punctuation and capitalisation rules once."""

    def __init__(self) -> None:
        self.examples: list[_Example] = []

    def stmt(self, key: tuple[str, ...], zh: str, en: str) -> None:
        self.examples.append(_Example(zh, _cap(en), key))

    def ask(self, key: tuple[str, ...], zh: str, en: str) -> None:
        self.examples.append(_Example(zh + "？", _cap(en) + "?", key))


def _gen_be_profession(out: _Sink, subjects: list[_Subject]) -> None:
    for s in subjects:
        for zh, sg, pl in _PROFESSIONS:
            key = ("be-profession", "S:" + s.zh, "N:" + zh)
            be = _be(s.agr)
            if s.plural:
                # Chinese drops 一个 with plural subjects; English goes plural.
                out.stmt(key, f"{s.zh}是{zh}", f"{s.en} {be} {pl}")
                out.stmt(key, f"{s.zh}不是{zh}", f"{s.en} {be} not {pl}")
                out.ask(key, f"{s.zh}是{zh}吗", f"{be} {s.en} {pl}")
            else:
                out.stmt(key, f"{s.zh}是一个{zh}", f"{s.en} {be} {_article(sg)}")
                out.stmt(key, f"{s.zh}不是{zh}", f"{s.en} {be} not {_article(sg)}")
                if s.zh != "我":  # "Am I a student?" is not a phrasebook sentence
                    out.ask(key, f"{s.zh}是{zh}吗", f"{be} {s.en} {_article(sg)}")


def _gen_have(out: _Sink, subjects: list[_Subject], rng: random.Random) -> None:
    for s in subjects:
        for n in _nouns():
            if n.kind == "kin" and s.kind == "np" and n.zh != "朋友":
                continue  # "my older sister has two older brothers" reads like a riddle
            key = ("have", "S:" + s.zh, "N:" + n.zh)
            have = _have(s.agr)
            # Four of the ten counts per subject and noun keep the family from swamping the corpus;
            # every count still occurs with every noun across subjects.
            counts = _shuffled(_COUNTS, rng)[:4]
            for zh_num, en_num, value in sorted(counts, key=lambda c: c[2]):
                obj = _count_phrase(value, en_num, n.sg, n.pl)
                out.stmt(key, f"{s.zh}有{zh_num}{n.mw}{n.zh}", f"{s.en} {have} {obj}")
            out.stmt(key, f"{s.zh}有很多{n.zh}", f"{s.en} {have} many {n.pl}")
            neg_obj = _article(n.sg) if n.neg_det == "a" else f"any {n.pl}"
            out.stmt(key, f"{s.zh}没有{n.zh}", f"{s.en} {_do(s.agr)}n't have {neg_obj}")
            if s.zh != "我":
                out.ask(key, f"{s.zh}有{n.zh}吗", f"{_do(s.agr)} {s.en} have {neg_obj}")


def _gen_modal(out: _Sink, subjects: list[_Subject]) -> None:
    for s in subjects:
        for act in _activities():
            for zh_verb, frame, en_verb in (("喜欢", LIKE, "like"), ("想", WANT, "want")):
                if frame not in act.frames:
                    continue
                key = ("modal", "S:" + s.zh, "V:" + zh_verb, "A:" + act.zh)
                verb = _VERBS[en_verb]
                vp = act.en(act.verb, occasion=frame == "w")
                out.stmt(key, f"{s.zh}{zh_verb}{act.zh}", f"{s.en} {verb.present(s.agr)} to {vp}")
                out.stmt(
                    key, f"{s.zh}不{zh_verb}{act.zh}", f"{s.en} {_do(s.agr)}n't {en_verb} to {vp}"
                )
                if s.zh != "我":
                    out.ask(
                        key, f"{s.zh}{zh_verb}{act.zh}吗", f"{_do(s.agr)} {s.en} {en_verb} to {vp}"
                    )
            if CAN in act.frames:
                key = ("modal", "S:" + s.zh, "V:会", "A:" + act.zh)
                vp = act.en(act.verb)
                out.stmt(key, f"{s.zh}会{act.zh}", f"{s.en} can {vp}")
                out.stmt(key, f"{s.zh}不会{act.zh}", f"{s.en} cannot {vp}")
                if s.zh != "我":
                    out.ask(key, f"{s.zh}会{act.zh}吗", f"can {s.en} {vp}")


def _gen_tenses(out: _Sink, subjects: list[_Subject]) -> None:
    for s in subjects:
        ask = s.zh != "我"
        for act in _activities():
            verb = _VERBS[act.verb]
            z = act.zh
            if HABIT in act.frames:
                key = ("tense", "S:" + s.zh, "T:habit", "A:" + z)
                out.stmt(key, f"{s.zh}{z}", f"{s.en} {act.en(verb.present(s.agr))}")
                out.stmt(key, f"{s.zh}不{z}", f"{s.en} {_do(s.agr)}n't {act.en(verb.base)}")
                if ask:
                    out.ask(key, f"{s.zh}{z}吗", f"{_do(s.agr)} {s.en} {act.en(verb.base)}")
            if PROGRESSIVE in act.frames:
                key = ("tense", "S:" + s.zh, "T:progressive", "A:" + z)
                be = _be(s.agr)
                vp = act.en(verb.ing, occasion=True)
                out.stmt(key, f"{s.zh}正在{z}", f"{s.en} {be} {vp}")
                out.stmt(key, f"{s.zh}没在{z}", f"{s.en} {be} not {vp}")
                if ask:
                    out.ask(key, f"{s.zh}正在{z}吗", f"{be} {s.en} {vp}")
            if FUTURE in act.frames:
                key = ("tense", "S:" + s.zh, "T:明天", "A:" + z)
                vp = act.en(verb.base, occasion=True)
                out.stmt(key, f"{s.zh}明天{z}", f"{s.en} will {vp} tomorrow")
                out.stmt(key, f"{s.zh}明天不{z}", f"{s.en} will not {vp} tomorrow")
                if ask:
                    out.ask(key, f"{s.zh}明天{z}吗", f"will {s.en} {vp} tomorrow")
            if PAST in act.frames:
                key = ("tense", "S:" + s.zh, "T:昨天", "A:" + z)
                out.stmt(
                    key, f"{s.zh}昨天{z}了", f"{s.en} {act.en(verb.past, occasion=True)} yesterday"
                )
                vp = act.en(verb.base, occasion=True)
                out.stmt(key, f"{s.zh}昨天没{z}", f"{s.en} didn't {vp} yesterday")
                if ask:
                    out.ask(key, f"{s.zh}昨天{z}了吗", f"did {s.en} {vp} yesterday")


def _gen_person_objects(out: _Sink, subjects: list[_Subject]) -> None:
    for s in subjects:
        for zh_verb, lemma in _PERSON_VERBS:
            verb = _VERBS[lemma]
            for zh_obj, en_obj, person in _OBJECTS_PERSON:
                if person == s.person:
                    continue  # "I love me", "we know us", "Li Hua knows Li Hua"
                key = ("person-object", "S:" + s.zh, "V:" + zh_verb, "O:" + zh_obj)
                out.stmt(key, f"{s.zh}{zh_verb}{zh_obj}", f"{s.en} {verb.present(s.agr)} {en_obj}")
                out.stmt(
                    key, f"{s.zh}不{zh_verb}{zh_obj}", f"{s.en} {_do(s.agr)}n't {lemma} {en_obj}"
                )
                if s.zh != "我":
                    out.ask(
                        key, f"{s.zh}{zh_verb}{zh_obj}吗", f"{_do(s.agr)} {s.en} {lemma} {en_obj}"
                    )


def _gen_thing_objects(out: _Sink, subjects: list[_Subject]) -> None:
    plan = [("爱", "love", _LIKED_THINGS), ("喜欢", "like", _LIKED_THINGS)]
    plan.append(("需要", "need", _NEEDED_THINGS))
    for s in subjects:
        for zh_verb, lemma, things in plan:
            verb = _VERBS[lemma]
            for zh_obj, en_obj in things:
                key = ("thing-object", "S:" + s.zh, "V:" + zh_verb, "O:" + zh_obj)
                out.stmt(key, f"{s.zh}{zh_verb}{zh_obj}", f"{s.en} {verb.present(s.agr)} {en_obj}")
                out.stmt(
                    key, f"{s.zh}不{zh_verb}{zh_obj}", f"{s.en} {_do(s.agr)}n't {lemma} {en_obj}"
                )
                if s.zh != "我":
                    out.ask(
                        key, f"{s.zh}{zh_verb}{zh_obj}吗", f"{_do(s.agr)} {s.en} {lemma} {en_obj}"
                    )


def _gen_counted(out: _Sink, subjects: list[_Subject], rng: random.Random) -> None:
    """想要 + count (want) and 买了 + count (bought)."""
    for s in subjects:
        for zh, mw, sg, pl in _COUNTED_ITEMS:
            counts = _shuffled(_COUNTS[:5], rng)[:2]
            key = ("want-count", "S:" + s.zh, "N:" + zh)
            for zh_num, en_num, value in sorted(counts, key=lambda c: c[2]):
                obj = _count_phrase(value, en_num, sg, pl)
                out.stmt(
                    key,
                    f"{s.zh}想要{zh_num}{mw}{zh}",
                    f"{s.en} {_VERBS['want'].present(s.agr)} {obj}",
                )
                if s.zh != "我":
                    out.ask(key, f"{s.zh}想要{zh_num}{mw}{zh}吗", f"{_do(s.agr)} {s.en} want {obj}")
            key = ("bought-count", "S:" + s.zh, "N:" + zh)
            for zh_num, en_num, value in sorted(_shuffled(_COUNTS, rng)[:2], key=lambda c: c[2]):
                obj = _count_phrase(value, en_num, sg, pl)
                out.stmt(key, f"{s.zh}买了{zh_num}{mw}{zh}", f"{s.en} bought {obj}")
                if s.zh != "我":
                    out.ask(key, f"{s.zh}买了{zh_num}{mw}{zh}吗", f"did {s.en} buy {obj}")


def _gen_person_adjectives(out: _Sink, subjects: list[_Subject]) -> None:
    for s in subjects:
        ask = s.zh != "我"
        be, was = _be(s.agr), _be(s.agr, past=True)
        for zh, en, kind in _PERSON_ADJECTIVES:
            key = ("person-adjective", "S:" + s.zh, "J:" + zh)
            out.stmt(key, f"{s.zh}很{zh}", f"{s.en} {be} {en}")
            out.stmt(key, f"{s.zh}非常{zh}", f"{s.en} {be} very {en}")
            out.stmt(key, f"{s.zh}不{zh}", f"{s.en} {be} not {en}")
            if ask:
                out.ask(key, f"{s.zh}{zh}吗", f"{be} {s.en} {en}")
            if kind in (TEMPORARY, TEMPORARY_WITH_FUTURE):
                # 有点儿 goes with unwelcome states only: 有点儿高兴 is not natural Chinese.
                out.stmt(key, f"{s.zh}有点儿{zh}", f"{s.en} {be} a little {en}")
            if kind == PERMANENT:
                continue
            out.stmt(key, f"{s.zh}今天很{zh}", f"{s.en} {be} {en} today")
            out.stmt(key, f"{s.zh}今天不{zh}", f"{s.en} {be} not {en} today")
            out.stmt(key, f"{s.zh}昨天很{zh}", f"{s.en} {was} {en} yesterday")
            out.stmt(key, f"{s.zh}昨天不{zh}", f"{s.en} {was} not {en} yesterday")
            if ask:
                out.ask(key, f"{s.zh}今天{zh}吗", f"{be} {s.en} {en} today")
                out.ask(key, f"{s.zh}昨天{zh}吗", f"{was} {s.en} {en} yesterday")
            if kind == TEMPORARY_WITH_FUTURE:
                out.stmt(key, f"{s.zh}明天会很{zh}", f"{s.en} will be {en} tomorrow")
                out.stmt(key, f"{s.zh}明天不会{zh}", f"{s.en} will not be {en} tomorrow")
                if ask:
                    out.ask(key, f"{s.zh}明天会{zh}吗", f"will {s.en} be {en} tomorrow")


def _described_nouns() -> list[tuple[str, str, str, str, str]]:
    """(zh, measure word, sg, pl, adjective kind) for things and people one can point at."""
    things = [(n.zh, n.mw, n.sg, n.pl, n.kind) for n in _nouns() if n.kind != "kin"]
    people = [(zh, "个", sg, pl, "person") for zh, sg, pl in _PROFESSIONS]
    people += [("男人", "个", "man", "men", "person"), ("女人", "个", "woman", "women", "person")]
    return things + people


_DEMONSTRATIVES = [
    ("这", "this", False),
    ("那", "that", False),
    ("这些", "these", True),
    ("那些", "those", True),
]


def _gen_thing_adjectives(out: _Sink) -> None:
    for zh, mw, sg, pl, kind in _described_nouns():
        adjectives = _THING_ADJECTIVES["person" if kind == "person" else kind]
        for zh_adj, en_adj in adjectives:
            key = ("described", "N:" + zh, "J:" + zh_adj)
            for zh_dem, en_dem, plural in _DEMONSTRATIVES:
                np_zh = f"{zh_dem}{zh}" if plural else f"{zh_dem}{mw}{zh}"
                np_en = f"{en_dem} {pl if plural else sg}"
                be = "are" if plural else "is"
                out.stmt(key, f"{np_zh}很{zh_adj}", f"{np_en} {be} {en_adj}")
                out.stmt(key, f"{np_zh}不{zh_adj}", f"{np_en} {be} not {en_adj}")
                out.ask(key, f"{np_zh}{zh_adj}吗", f"{be} {np_en} {en_adj}")
                if not plural:
                    out.stmt(key, f"{np_zh}非常{zh_adj}", f"{np_en} {be} very {en_adj}")


def _gen_this_is(out: _Sink) -> None:
    for zh, mw, sg, pl, _ in _described_nouns():
        key = ("this-is", "N:" + zh)
        for zh_dem, en_dem, plural in _DEMONSTRATIVES:
            if plural:
                out.stmt(key, f"{zh_dem}是{zh}", f"{en_dem} are {pl}")
                out.stmt(key, f"{zh_dem}不是{zh}", f"{en_dem} are not {pl}")
                out.ask(key, f"{zh_dem}是{zh}吗", f"are {en_dem} {pl}")
            else:
                out.stmt(key, f"{zh_dem}是一{mw}{zh}", f"{en_dem} is {_article(sg)}")
                out.stmt(key, f"{zh_dem}不是{zh}", f"{en_dem} is not {_article(sg)}")
                out.ask(key, f"{zh_dem}是{zh}吗", f"is {en_dem} {_article(sg)}")


def _gen_places(out: _Sink, subjects: list[_Subject]) -> None:
    activities = {a.zh: a for a in _activities()}
    for s in subjects:
        ask = s.zh != "我"
        be, was = _be(s.agr), _be(s.agr, past=True)
        for zh, en in _PLACES:
            key = ("at-place", "S:" + s.zh, "P:" + zh)
            out.stmt(key, f"{s.zh}在{zh}", f"{s.en} {be} {en}")
            out.stmt(key, f"{s.zh}不在{zh}", f"{s.en} {be} not {en}")
            out.stmt(key, f"{s.zh}昨天在{zh}", f"{s.en} {was} {en} yesterday")
            out.stmt(key, f"{s.zh}昨天不在{zh}", f"{s.en} {was} not {en} yesterday")
            out.stmt(key, f"{s.zh}明天在{zh}", f"{s.en} will be {en} tomorrow")
            out.stmt(key, f"{s.zh}明天不在{zh}", f"{s.en} will not be {en} tomorrow")
            if ask:
                out.ask(key, f"{s.zh}在{zh}吗", f"{be} {s.en} {en}")
                out.ask(key, f"{s.zh}昨天在{zh}吗", f"{was} {s.en} {en} yesterday")
                out.ask(key, f"{s.zh}明天在{zh}吗", f"will {s.en} be {en} tomorrow")
            for act_zh in _PLACE_ACTIVITIES.get(zh, "").split():
                act = activities[act_zh]
                verb = _VERBS[act.verb]
                key = ("activity-at-place", "S:" + s.zh, "P:" + zh, "A:" + act_zh)
                here = f"{s.zh}在{zh}{act_zh}"
                out.stmt(key, here, f"{s.en} {act.en(verb.present(s.agr))} {en}")
                out.stmt(
                    key,
                    f"{s.zh}不在{zh}{act_zh}",
                    f"{s.en} {_do(s.agr)}n't {act.en(verb.base)} {en}",
                )
                if ask:
                    out.ask(key, here + "吗", f"{_do(s.agr)} {s.en} {act.en(verb.base)} {en}")


def _gen_names_ages(out: _Sink, subjects: list[_Subject], rng: random.Random) -> None:
    for s in subjects:
        ask = s.zh != "我"
        be = _be(s.agr)
        if s.kind != "name" and not s.plural:
            for zh, en, gender in _NAMES:
                if "n" not in (gender, s.gender) and gender != s.gender:
                    continue
                key = ("name", "S:" + s.zh, "M:" + zh)
                out.stmt(key, f"{s.zh}叫{zh}", f"{s.poss} name is {en}")
                out.stmt(key, f"{s.zh}不叫{zh}", f"{s.poss} name is not {en}")
                if ask:
                    out.ask(key, f"{s.zh}叫{zh}吗", f"is {s.poss} name {en}")
            if ask:
                out.ask(
                    ("wh", "S:" + s.zh, "W:name"), f"{s.zh}叫什么名字", f"what is {s.poss} name"
                )
        if ask:
            out.ask(("wh", "S:" + s.zh, "W:age"), f"{s.zh}多大", f"how old {be} {s.en}")
        out.ask(("wh", "S:" + s.zh, "W:where"), f"{s.zh}在哪儿", f"where {be} {s.en}")
        if ask:
            out.ask(
                ("wh", "S:" + s.zh, "W:like"), f"{s.zh}喜欢什么", f"what {_do(s.agr)} {s.en} like"
            )
        lo, hi = s.ages
        # About 45 ages per subject; every age still appears with many subjects.
        for age in range(lo, hi + 1):
            if rng.random() >= 45 / (hi - lo + 1):
                continue
            key = ("age", "S:" + s.zh, "Y:" + str(age))
            years = "year" if age == 1 else "years"
            out.stmt(
                key, f"{s.zh}{_zh_number(age)}岁", f"{s.en} {be} {_en_number(age)} {years} old"
            )
            if ask:
                out.ask(
                    key,
                    f"{s.zh}{_zh_number(age)}岁吗",
                    f"{be} {s.en} {_en_number(age)} {years} old",
                )


def _generate_zh_en() -> list[_Example]:
    """Every zh-en example, in a fixed order."""
    rng = random.Random(_SEED)
    subjects = _subjects()
    out = _Sink()
    _gen_be_profession(out, subjects)
    _gen_have(out, subjects, rng)
    _gen_modal(out, subjects)
    _gen_tenses(out, subjects)
    _gen_person_objects(out, subjects)
    _gen_thing_objects(out, subjects)
    _gen_counted(out, subjects, rng)
    _gen_person_adjectives(out, subjects)
    _gen_thing_adjectives(out)
    _gen_this_is(out)
    _gen_places(out, subjects)
    _gen_names_ages(out, subjects, rng)
    return out.examples
