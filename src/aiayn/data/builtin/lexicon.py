"""The zh-en phrasebook's words: subjects, verbs, activities, nouns, adjectives, places, names."""

from __future__ import annotations

from dataclasses import dataclass

# The sentence frames an activity fits; ``_Activity.frames`` is a string of these letters.
LIKE = "l"  # 喜欢 + activity: "She likes to eat apples"
WANT = "w"  # 想 + activity: "I want to read a book"
CAN = "c"  # 会 + activity: "Can you swim?"
HABIT = "h"  # 每天 + activity: habitual present
PROGRESSIVE = "p"  # 在 + activity: "He is reading books"
FUTURE = "f"  # 明天 + activity: "He will go to Beijing tomorrow"
PAST = "d"  # 昨天 + activity: "I didn't go to school yesterday"

# What a person adjective allows (the third field of _PERSON_ADJECTIVES).
TEMPORARY = "t"  # a passing state: takes 今天/昨天 and 有点儿 ("a little tired")
TEMPORARY_WITH_FUTURE = "T"  # as TEMPORARY, and also sensible with 明天 会 ("will be busy")
TEMPORARY_PLEASANT = "h"  # a passing state, but not with 有点儿 (有点儿高兴 is not natural Chinese)
PERMANENT = "p"  # a trait: no time words


@dataclass(frozen=True)
class _Subject:
    zh: str
    en: str  # as it appears mid-sentence: "I", "he", "my mother", "Li Hua"
    agr: str  # "1s" (am), "3s" (is, has, likes) or "pl" (are, have, like); "you" agrees as "pl"
    poss: str  # "my", "his", "my mother's"
    person: str  # "1", "2", "3" or a name: keeps "I love me" and "Li Hua knows Li Hua" out
    ages: tuple[int, int]
    kind: str  # "pron", "name" or "np"
    gender: str = "n"  # "m", "f" or "n" (either): keeps "my father's name is Wang Fang" out

    @property
    def plural(self) -> bool:
        # Singular 你 agrees like a plural ("you are") but is one person ("you are a student").
        return self.agr == "pl" and self.zh != "你"


def _subjects() -> list[_Subject]:
    s = _Subject
    return [
        s("我", "I", "1s", "my", "1", (4, 90), "pron"),
        s("你", "you", "pl", "your", "2", (4, 90), "pron"),
        s("他", "he", "3s", "his", "3m", (4, 90), "pron", "m"),
        s("她", "she", "3s", "her", "3f", (4, 90), "pron", "f"),
        s("我们", "we", "pl", "our", "1", (4, 90), "pron"),
        s("你们", "you", "pl", "your", "2", (4, 90), "pron"),
        s("他们", "they", "pl", "their", "3p", (4, 90), "pron"),
        s("她们", "they", "pl", "their", "3p", (4, 90), "pron"),
        s("小明", "Xiaoming", "3s", "Xiaoming's", "小明", (4, 30), "name", "m"),
        s("小红", "Xiaohong", "3s", "Xiaohong's", "小红", (4, 30), "name", "f"),
        s("李华", "Li Hua", "3s", "Li Hua's", "李华", (6, 80), "name"),
        s("王芳", "Wang Fang", "3s", "Wang Fang's", "王芳", (6, 80), "name", "f"),
        s("张伟", "Zhang Wei", "3s", "Zhang Wei's", "张伟", (6, 80), "name", "m"),
        s("我的朋友", "my friend", "3s", "my friend's", "np", (6, 80), "np"),
        s("我妈妈", "my mother", "3s", "my mother's", "np", (25, 90), "np", "f"),
        s("我爸爸", "my father", "3s", "my father's", "np", (25, 90), "np", "m"),
        s("我哥哥", "my older brother", "3s", "my older brother's", "np", (8, 70), "np", "m"),
        s("我姐姐", "my older sister", "3s", "my older sister's", "np", (8, 70), "np", "f"),
        s("他的妻子", "his wife", "3s", "his wife's", "np", (20, 90), "np", "f"),
        s("她的丈夫", "her husband", "3s", "her husband's", "np", (20, 90), "np", "m"),
        s("我的同学", "my classmate", "3s", "my classmate's", "np", (6, 30), "np"),
        s("我的父母", "my parents", "pl", "my parents'", "np", (40, 90), "np"),
        s("我的朋友们", "my friends", "pl", "my friends'", "np", (6, 80), "np"),
    ]


# Pronouns and names that can be objects: (zh, en object form, person).
_OBJECTS_PERSON = [
    ("我", "me", "1"),
    ("你", "you", "2"),
    ("他", "him", "3m"),
    ("她", "her", "3f"),
    ("我们", "us", "1"),
    ("他们", "them", "3p"),
    ("李华", "Li Hua", "李华"),
    ("王芳", "Wang Fang", "王芳"),
    ("小明", "Xiaoming", "小明"),
]


@dataclass(frozen=True)
class _Verb:
    base: str
    s3: str  # third person singular present
    past: str
    ing: str

    def present(self, agr: str) -> str:
        return self.s3 if agr == "3s" else self.base


def _verbs() -> dict[str, _Verb]:
    table = """
        eat eats ate eating; drink drinks drank drinking; read reads read reading;
        watch watches watched watching; study studies studied studying;
        speak speaks spoke speaking; write writes wrote writing; listen listens listened listening;
        sing sings sang singing; dance dances danced dancing; swim swims swam swimming;
        run runs ran running; play plays played playing; cook cooks cooked cooking;
        buy buys bought buying; draw draws drew drawing; drive drives drove driving;
        ride rides rode riding; sleep sleeps slept sleeping; work works worked working;
        travel travels traveled traveling; go goes went going; do does did doing;
        rest rests rested resting; love loves loved loving; like likes liked liking;
        know knows knew knowing; miss misses missed missing; need needs needed needing;
        want wants wanted wanting; believe believes believed believing
    """
    verbs = {}
    for entry in table.split(";"):
        base, s3, past, ing = entry.split()
        verbs[base] = _Verb(base, s3, past, ing)
    return verbs


_VERBS = _verbs()


@dataclass(frozen=True)
class _Activity:
    """A verb phrase: Chinese verb+object, English verb and the words after it."""

    zh: str
    verb: str  # key into _VERBS
    rest: str  # generic English complement: "apples", "to music", "" for none
    specific: str | None  # complement for one occasion (past, future, want): "a movie"
    frames: str  # which sentence frames fit: letters among LIKE, WANT, CAN, ... above

    def en(self, form: str, *, occasion: bool = False) -> str:
        """English verb phrase with the verb in ``form`` (a ready-made verb string)."""
        rest = self.specific if occasion and self.specific is not None else self.rest
        return f"{form} {rest}" if rest else form


def _activities() -> list[_Activity]:
    a = _Activity
    return [
        a("吃苹果", "eat", "apples", None, LIKE + WANT + HABIT + PROGRESSIVE + FUTURE + PAST),
        a("吃米饭", "eat", "rice", None, LIKE + WANT + HABIT + PROGRESSIVE + FUTURE + PAST),
        a("吃面条", "eat", "noodles", None, LIKE + WANT + HABIT + PROGRESSIVE + FUTURE + PAST),
        a("吃饺子", "eat", "dumplings", None, LIKE + WANT + HABIT + PROGRESSIVE + FUTURE + PAST),
        a("吃鱼", "eat", "fish", None, LIKE + WANT + HABIT + PROGRESSIVE + FUTURE + PAST),
        a("喝茶", "drink", "tea", None, LIKE + WANT + HABIT + PROGRESSIVE + FUTURE + PAST),
        a("喝咖啡", "drink", "coffee", None, LIKE + WANT + HABIT + PROGRESSIVE + FUTURE + PAST),
        a("喝牛奶", "drink", "milk", None, LIKE + WANT + HABIT + PROGRESSIVE + FUTURE + PAST),
        a("喝果汁", "drink", "juice", None, LIKE + WANT + HABIT + PROGRESSIVE + FUTURE + PAST),
        a("看书", "read", "books", "a book", LIKE + WANT + HABIT + PROGRESSIVE + FUTURE + PAST),
        a(
            "看报纸",
            "read",
            "the newspaper",
            None,
            LIKE + WANT + HABIT + PROGRESSIVE + FUTURE + PAST,
        ),
        a("看电视", "watch", "TV", None, LIKE + WANT + HABIT + PROGRESSIVE + FUTURE + PAST),
        a(
            "看电影",
            "watch",
            "movies",
            "a movie",
            LIKE + WANT + HABIT + PROGRESSIVE + FUTURE + PAST,
        ),
        a("学习中文", "study", "Chinese", None, LIKE + WANT + HABIT + PROGRESSIVE + FUTURE + PAST),
        a("学习英语", "study", "English", None, LIKE + WANT + HABIT + PROGRESSIVE + FUTURE + PAST),
        a("学习数学", "study", "math", None, LIKE + WANT + HABIT + PROGRESSIVE + FUTURE + PAST),
        a("学习历史", "study", "history", None, LIKE + WANT + HABIT + PROGRESSIVE + FUTURE + PAST),
        a("说中文", "speak", "Chinese", None, LIKE + WANT + CAN + HABIT),
        a("说英语", "speak", "English", None, LIKE + WANT + CAN + HABIT),
        a(
            "写信",
            "write",
            "letters",
            "a letter",
            LIKE + WANT + HABIT + PROGRESSIVE + FUTURE + PAST,
        ),
        a("听音乐", "listen", "to music", None, LIKE + WANT + HABIT + PROGRESSIVE + FUTURE + PAST),
        a("唱歌", "sing", "", None, LIKE + WANT + CAN + HABIT + PROGRESSIVE + FUTURE + PAST),
        a("跳舞", "dance", "", None, LIKE + WANT + CAN + HABIT + PROGRESSIVE + FUTURE + PAST),
        a("游泳", "swim", "", None, LIKE + WANT + CAN + HABIT + PROGRESSIVE + FUTURE + PAST),
        a("跑步", "run", "", None, LIKE + WANT + HABIT + PROGRESSIVE + FUTURE + PAST),
        a(
            "打篮球",
            "play",
            "basketball",
            None,
            LIKE + WANT + CAN + HABIT + PROGRESSIVE + FUTURE + PAST,
        ),
        a(
            "踢足球",
            "play",
            "football",
            None,
            LIKE + WANT + CAN + HABIT + PROGRESSIVE + FUTURE + PAST,
        ),
        a(
            "打网球",
            "play",
            "tennis",
            None,
            LIKE + WANT + CAN + HABIT + PROGRESSIVE + FUTURE + PAST,
        ),
        a("下棋", "play", "chess", None, LIKE + WANT + CAN + HABIT + PROGRESSIVE + FUTURE + PAST),
        a("做饭", "cook", "", None, LIKE + WANT + CAN + HABIT + PROGRESSIVE + FUTURE + PAST),
        a("买衣服", "buy", "clothes", None, LIKE + WANT + PROGRESSIVE + FUTURE + PAST),
        a("画画", "draw", "", None, LIKE + WANT + CAN + HABIT + PROGRESSIVE + FUTURE + PAST),
        a(
            "弹钢琴",
            "play",
            "the piano",
            None,
            LIKE + WANT + CAN + HABIT + PROGRESSIVE + FUTURE + PAST,
        ),
        a(
            "弹吉他",
            "play",
            "the guitar",
            None,
            LIKE + WANT + CAN + HABIT + PROGRESSIVE + FUTURE + PAST,
        ),
        a("开车", "drive", "", None, LIKE + WANT + CAN + HABIT + PROGRESSIVE + FUTURE + PAST),
        a(
            "骑自行车",
            "ride",
            "a bicycle",
            None,
            LIKE + WANT + CAN + HABIT + PROGRESSIVE + FUTURE + PAST,
        ),
        a("睡觉", "sleep", "", None, LIKE + WANT + PROGRESSIVE),
        a("工作", "work", "", None, LIKE + WANT + HABIT + PROGRESSIVE + FUTURE + PAST),
        a("旅行", "travel", "", None, LIKE + WANT + FUTURE),
        a("休息", "rest", "", None, WANT + PROGRESSIVE),
        a("做作业", "do", "homework", None, WANT + HABIT + PROGRESSIVE + FUTURE + PAST),
        a("去学校", "go", "to school", None, WANT + HABIT + FUTURE + PAST),
        a("去北京", "go", "to Beijing", None, LIKE + WANT + FUTURE + PAST),
        a("去上海", "go", "to Shanghai", None, LIKE + WANT + FUTURE + PAST),
        a("回家", "go", "home", None, WANT + HABIT + FUTURE + PAST),
        a("去公园", "go", "to the park", None, LIKE + WANT + HABIT + FUTURE + PAST),
        a("去图书馆", "go", "to the library", None, LIKE + WANT + HABIT + FUTURE + PAST),
        a("去商店", "go", "to the store", None, WANT + FUTURE + PAST),
        a("去医院", "go", "to the hospital", None, WANT + FUTURE + PAST),
    ]


@dataclass(frozen=True)
class _Noun:
    zh: str
    mw: str  # measure word
    sg: str
    pl: str
    neg_det: str  # "a" -> "don't have a car"; "any" -> "don't have any books"
    kind: str  # "object", "animal", "food", "person", "kin"


def _nouns() -> list[_Noun]:
    n = _Noun
    return [
        n("书", "本", "book", "books", "any", "object"),
        n("词典", "本", "dictionary", "dictionaries", "a", "object"),
        n("笔", "支", "pen", "pens", "a", "object"),
        n("铅笔", "支", "pencil", "pencils", "a", "object"),
        n("车", "辆", "car", "cars", "a", "object"),
        n("自行车", "辆", "bicycle", "bicycles", "a", "object"),
        n("电脑", "台", "computer", "computers", "a", "object"),
        n("手机", "部", "phone", "phones", "a", "object"),
        n("房子", "套", "house", "houses", "a", "object"),
        n("桌子", "张", "table", "tables", "a", "object"),
        n("椅子", "把", "chair", "chairs", "any", "object"),
        n("床", "张", "bed", "beds", "a", "object"),
        n("票", "张", "ticket", "tickets", "any", "object"),
        n("地图", "张", "map", "maps", "a", "object"),
        n("照片", "张", "photo", "photos", "any", "object"),
        n("雨伞", "把", "umbrella", "umbrellas", "a", "object"),
        n("钥匙", "把", "key", "keys", "any", "object"),
        n("刀", "把", "knife", "knives", "a", "object"),
        n("衬衫", "件", "shirt", "shirts", "any", "object"),
        n("外套", "件", "coat", "coats", "a", "object"),
        n("包", "个", "bag", "bags", "a", "object"),
        n("手表", "块", "watch", "watches", "a", "object"),
        n("杯子", "个", "cup", "cups", "any", "object"),
        n("猫", "只", "cat", "cats", "a", "animal"),
        n("狗", "只", "dog", "dogs", "a", "animal"),
        n("鸟", "只", "bird", "birds", "any", "animal"),
        n("老鼠", "只", "mouse", "mice", "any", "animal"),
        n("羊", "只", "sheep", "sheep", "any", "animal"),
        n("马", "匹", "horse", "horses", "a", "animal"),
        n("鱼", "条", "fish", "fish", "any", "animal"),
        n("苹果", "个", "apple", "apples", "any", "food"),
        n("橘子", "个", "orange", "oranges", "any", "food"),
        n("鸡蛋", "个", "egg", "eggs", "any", "food"),
        n("朋友", "个", "friend", "friends", "any", "kin"),
        n("孩子", "个", "child", "children", "any", "person"),
        n("哥哥", "个", "older brother", "older brothers", "any", "kin"),
        n("姐姐", "个", "older sister", "older sisters", "any", "kin"),
        n("弟弟", "个", "younger brother", "younger brothers", "any", "kin"),
        n("妹妹", "个", "younger sister", "younger sisters", "any", "kin"),
    ]


# Professions, for 是 and as people described with 这个/那个: (zh, sg, pl).
_PROFESSIONS = [
    ("学生", "student", "students"),
    ("老师", "teacher", "teachers"),
    ("医生", "doctor", "doctors"),
    ("工程师", "engineer", "engineers"),
    ("护士", "nurse", "nurses"),
    ("厨师", "cook", "cooks"),
    ("司机", "driver", "drivers"),
    ("警察", "police officer", "police officers"),
    ("律师", "lawyer", "lawyers"),
    ("作家", "writer", "writers"),
    ("画家", "painter", "painters"),
    ("歌手", "singer", "singers"),
    ("农民", "farmer", "farmers"),
    ("演员", "actor", "actors"),
    ("艺术家", "artist", "artists"),
    ("科学家", "scientist", "scientists"),
    ("经理", "manager", "managers"),
    ("记者", "reporter", "reporters"),
    ("工人", "worker", "workers"),
]

# Numbers with measure words: 两, not 二, counts things. "一" is rendered as a/an.
_COUNTS = [
    ("一", "", 1),
    ("两", "two", 2),
    ("三", "three", 3),
    ("四", "four", 4),
    ("五", "five", 5),
    ("六", "six", 6),
    ("七", "seven", 7),
    ("八", "eight", 8),
    ("九", "nine", 9),
    ("十", "ten", 10),
]

_ZH_DIGITS = "零一二三四五六七八九"
_EN_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_EN_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def _zh_number(n: int) -> str:
    """1..99 in Chinese numerals, as used before 岁 (两 for a lone two)."""
    if n == 2:
        return "两"
    tens, ones = divmod(n, 10)
    if tens == 0:
        return _ZH_DIGITS[ones]
    head = "" if tens == 1 else _ZH_DIGITS[tens]
    return head + "十" + (_ZH_DIGITS[ones] if ones else "")


def _en_number(n: int) -> str:
    if n < 20:
        return _EN_ONES[n]
    tens, ones = divmod(n, 10)
    return _EN_TENS[tens] + (f"-{_EN_ONES[ones]}" if ones else "")


# Person adjectives: (zh, en, what it allows: TEMPORARY, TEMPORARY_WITH_FUTURE, ... above).
_PERSON_ADJECTIVES = [
    ("高兴", "happy", TEMPORARY_PLEASANT),
    ("累", "tired", TEMPORARY_WITH_FUTURE),
    ("忙", "busy", TEMPORARY_WITH_FUTURE),
    ("饿", "hungry", TEMPORARY),
    ("渴", "thirsty", TEMPORARY),
    ("冷", "cold", TEMPORARY),
    ("热", "hot", TEMPORARY),
    ("紧张", "nervous", TEMPORARY),
    ("生气", "angry", TEMPORARY),
    ("难过", "sad", TEMPORARY),
    ("无聊", "bored", TEMPORARY),
    ("困", "sleepy", TEMPORARY),
    ("高", "tall", PERMANENT),
    ("矮", "short", PERMANENT),
    ("聪明", "smart", PERMANENT),
    ("友好", "friendly", PERMANENT),
    ("年轻", "young", PERMANENT),
    ("善良", "kind", PERMANENT),
    ("努力", "hardworking", PERMANENT),
]

# Adjectives for things, by noun kind.
_THING_ADJECTIVES = {
    "object": [
        ("好", "good"),
        ("新", "new"),
        ("旧", "old"),
        ("大", "big"),
        ("小", "small"),
        ("贵", "expensive"),
        ("便宜", "cheap"),
        ("漂亮", "beautiful"),
        ("干净", "clean"),
        ("脏", "dirty"),
    ],
    "animal": [
        ("大", "big"),
        ("小", "small"),
        ("可爱", "cute"),
        ("漂亮", "beautiful"),
        ("干净", "clean"),
        ("脏", "dirty"),
        ("老", "old"),
        ("饿", "hungry"),
    ],
    "food": [
        ("大", "big"),
        ("小", "small"),
        ("甜", "sweet"),
        ("新鲜", "fresh"),
        ("贵", "expensive"),
        ("便宜", "cheap"),
        ("好吃", "delicious"),
    ],
    "person": [
        ("高", "tall"),
        ("聪明", "smart"),
        ("友好", "friendly"),
        ("年轻", "young"),
        ("善良", "kind"),
        ("努力", "hardworking"),
        ("忙", "busy"),
        ("累", "tired"),
    ],
}

# Places: (zh, English phrase after "be" / after an activity).
_PLACES = [
    ("学校", "at school"),
    ("家", "at home"),
    ("医院", "at the hospital"),
    ("公园", "in the park"),
    ("图书馆", "at the library"),
    ("北京", "in Beijing"),
    ("上海", "in Shanghai"),
    ("中国", "in China"),
    ("日本", "in Japan"),
    ("办公室", "in the office"),
    ("商店", "at the store"),
    ("饭馆", "at the restaurant"),
    ("教室", "in the classroom"),
    ("厨房", "in the kitchen"),
    ("银行", "at the bank"),
    ("火车站", "at the train station"),
    ("机场", "at the airport"),
]

# What people plausibly do at a place (Chinese activity strings from _activities()).
_PLACE_ACTIVITIES = {
    "学校": "学习中文 学习英语 学习数学 学习历史 打篮球 踢足球 唱歌 跳舞 说英语 画画",
    "家": "看电视 看书 看电影 做饭 做作业 听音乐 休息 睡觉 弹钢琴 弹吉他 画画 写信 喝茶",
    "图书馆": "看书 看报纸 学习中文 学习英语 学习数学 学习历史 做作业 写信",
    "公园": "跑步 踢足球 打篮球 打网球 下棋 唱歌 跳舞 画画 休息",
    "办公室": "工作 喝咖啡 喝茶 看报纸 写信",
    "饭馆": "吃面条 吃饺子 吃鱼 吃米饭 喝茶 喝果汁 工作",
    "厨房": "做饭 吃米饭 吃面条 喝牛奶",
    "教室": "学习中文 学习英语 学习数学 学习历史 做作业 唱歌",
    "北京": "工作 学习中文 学习英语",
    "上海": "工作 学习中文 学习英语",
}

# Things one loves or likes: (zh, en).
_LIKED_THINGS = [
    ("中国", "China"),
    ("北京", "Beijing"),
    ("上海", "Shanghai"),
    ("音乐", "music"),
    ("茶", "tea"),
    ("咖啡", "coffee"),
    ("猫", "cats"),
    ("狗", "dogs"),
    ("花", "flowers"),
    ("春天", "spring"),
    ("夏天", "summer"),
    ("秋天", "autumn"),
    ("冬天", "winter"),
    ("电影", "movies"),
    ("足球", "football"),
    ("中文", "Chinese"),
    ("历史", "history"),
    ("数学", "math"),
    ("这本书", "this book"),
    ("那首歌", "that song"),
    ("这个城市", "this city"),
    ("大海", "the sea"),
]

_NEEDED_THINGS = [("水", "water"), ("钱", "money"), ("时间", "time"), ("帮助", "help")]

# Verbs taking a person object: (zh, English lemma).
_PERSON_VERBS = [
    ("爱", "love"),
    ("喜欢", "like"),
    ("认识", "know"),
    ("想念", "miss"),
    ("相信", "believe"),
]

# Things to want or buy with a count: (zh noun, measure word, en singular, en plural).
# Drinks and dishes are counted by their container.
_COUNTED_ITEMS = [
    ("茶", "杯", "cup of tea", "cups of tea"),
    ("咖啡", "杯", "cup of coffee", "cups of coffee"),
    ("水", "瓶", "bottle of water", "bottles of water"),
    ("牛奶", "杯", "glass of milk", "glasses of milk"),
    ("果汁", "杯", "glass of juice", "glasses of juice"),
    ("啤酒", "瓶", "bottle of beer", "bottles of beer"),
    ("米饭", "碗", "bowl of rice", "bowls of rice"),
    ("面条", "碗", "bowl of noodles", "bowls of noodles"),
    ("汤", "碗", "bowl of soup", "bowls of soup"),
    ("苹果", "个", "apple", "apples"),
    ("橘子", "个", "orange", "oranges"),
    ("鸡蛋", "个", "egg", "eggs"),
    ("书", "本", "book", "books"),
    ("笔", "支", "pen", "pens"),
    ("票", "张", "ticket", "tickets"),
    ("地图", "张", "map", "maps"),
    ("衬衫", "件", "shirt", "shirts"),
]

# Names for 叫: (zh, en, gender). Li Hua and Liu Yang are given to boys and girls alike.
_NAMES = [
    ("李华", "Li Hua", "n"),
    ("王芳", "Wang Fang", "f"),
    ("张伟", "Zhang Wei", "m"),
    ("刘洋", "Liu Yang", "n"),
    ("陈静", "Chen Jing", "f"),
    ("小明", "Xiaoming", "m"),
]
