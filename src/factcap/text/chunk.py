"""Noun phrases of English captions, by rules: what the fallback claim extractor asks a detector for.

No model: PyPI holds no well-kept tagger whose model ships in its maintainers' own wheel and
reads captions well. spaCy's English models are not on PyPI from spaCy (only others'
re-uploads), NLTK's, Stanza's and Flair's models are separate downloads, and the Brill lexicon
that TextBlob bundles tags caption verbs as nouns ("a surfer *rides* the waves", "birds *perch*
on wires", "deer *drink*") and costs NLTK and 3 s of import. So this is a small tagger over word
tables, in three steps:

1. **Words.** Closed classes come from tables: determiners, number words and digits, pronouns,
   prepositions, conjunctions, auxiliaries, adverbs; so do about 280 caption adjectives and
   340 caption verbs with all their forms. Any other word is a noun, an adverb when it ends in
   "-ly", or a participle when it ends in "-ing" / "-ed" (with tables of the nouns that look
   like that: "building", "wedding", "bed", "bread").
2. **Context** decides between a noun and a verb. After a determiner, an adjective or a
   preposition, a word is a noun ("a *stand*"). After a noun it is the verb when number agrees
   ("two women *hold*", "sheep *graze*", "a man *signs* papers") and part of a compound noun
   otherwise ("a fruit *stand*", "street *signs* on a pole"); after a verb it is the object
   ("hold *cacti*"). A participle modifies the next noun ("a *sleeping* cat") unless it follows
   one ("a man *sitting* on a bench").
3. **Chunks.** Runs of adjectives, participle modifiers and nouns, ended by any other word, by a
   plural noun ("two *dogs* play"), and by "and" between nouns ("dishes / and / boxes"; between
   adjectives it joins: "a red and white bus"). A run's head is its last noun; the subject is
   the head, singular, with up to two words before it. A number word or digit just before the
   run is its count.

Some runs name no object and are left out: picture words ("a *photo* of", "in the
*background*"), places relative to something ("in *front* of", "on the *left*"), amounts before
"of" ("a *herd* of elephants" → elephant; "a plate of pies" keeps both), and negated phrases
("*no* people", "*without* a helmet").

>>> noun_phrases("sheep graze near some benches")
[('sheep', None), ('bench', None)]
>>> noun_phrases("two women hold cacti")
[('woman', 2), ('cactus', None)]
>>> noun_phrases("wolves run past churches")
[('wolf', None), ('church', None)]
>>> noun_phrases("a plate of pies and a red and white bus")
[('plate', None), ('pie', None), ('red and white bus', None)]
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from factcap.text.english import _UNCHANGED, NUMBER_WORDS, singular

# --- closed classes ---------------------------------------------------------------------------

#: Determiners and quantifiers: they open a noun phrase and are never part of its subject.
DETERMINERS = frozenset(
    """a an the this these those some any each every another either neither no all both many
    much more most few fewer other others such my your his her its our their lots enough
    various numerous multiple own""".split()
)
_SINGULAR_DETERMINERS = frozenset("a an this each every another either neither".split())
_PLURAL_DETERMINERS = frozenset(
    "these those many few fewer both lots various numerous multiple".split()
)
#: Number words (NUMBER_WORDS' one-word ones, and a few more) → their value; "several" → None.
NUMBERS: dict[str, int | None] = {w: n for w, n in NUMBER_WORDS.items() if " " not in w} | {
    "eleven": 11,
    "twelve": 12,
    "dozen": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "twenty": 20,
}
PRONOUNS = frozenset(
    """i me you he him she it we us they them mine yours hers ours theirs myself yourself
    himself herself itself ourselves themselves someone somebody something anyone anybody
    anything everyone everybody everything nobody nothing none ones there here whoever
    whatever""".split()
)
#: Pronouns after which a verb follows ("it *rests*"), and those of them that take a plural verb.
_SUBJECT_PRONOUNS = frozenset(
    """i you he she it we they someone somebody something everyone everybody everything anyone
    nobody nothing this that these those""".split()
)
_PLURAL_PRONOUNS = frozenset("i you we they these those".split())
PREPOSITIONS = frozenset(
    """about above across after against along alongside amid amidst among amongst around as at
    atop before behind below beneath beside besides between beyond by despite down during except
    for from in inside into like near nearby of off on onto opposite out outside over past per
    round through throughout thru till to toward towards under underneath unlike until up upon
    via with within without""".split()
)
CONJUNCTIONS = frozenset(
    """and or but nor while whilst as because so yet though although whereas if whether then
    plus than &""".split()
)
#: Conjunctions that open a new clause: what follows reads as the start of a sentence.
_SUBORDINATORS = frozenset(
    "while whilst as because so though although whereas if whether then than but".split()
)
_RELATIVES = frozenset("who whom which whose what where when".split())
AUXILIARIES = frozenset(
    """is are was were be been being am 're 'm 've 'd 'll has have had having do does did can
    could will would shall should may might must isn't aren't wasn't weren't doesn't don't
    didn't can't cannot won't wouldn't couldn't shouldn't hasn't haven't""".split()
)
#: Auxiliaries after which a verb's base form follows ("can *hold*").
_MODALS = frozenset(
    """do does did can could will would shall should may might must doesn't don't didn't can't
    cannot won't wouldn't couldn't shouldn't 'll 'd""".split()
)
#: Linking verbs: a bare word after them describes, it names nothing ("the sky is *clear*").
_COPULAS = frozenset(
    """is are was were be been being am 's 're 'm isn't aren't wasn't weren't look looks looked
    seem seems seemed appear appears appeared become becomes became remain remains remained stay
    stays feel feels""".split()
)
ADVERBS = frozenset(
    """very quite rather really too so also just still even only almost nearly mostly partly
    together apart nearby outdoors indoors upstairs downstairs away ahead forward forwards
    backward backwards upward upwards downward downwards sideways now today tonight currently
    again already soon later maybe perhaps please yes not never always often sometimes usually
    once twice somewhere everywhere anywhere elsewhere underwater afloat aloft ashore abroad
    alone""".split()
)
#: Closed-class words: none of them is ever a subject.
CLOSED_CLASS = (
    DETERMINERS
    | frozenset(NUMBERS)
    | PRONOUNS
    | PREPOSITIONS
    | CONJUNCTIONS
    | _RELATIVES
    | AUXILIARIES
    | ADVERBS
    | {"that", "'s", "'"}
)

# --- adjectives -------------------------------------------------------------------------------

_ADJECTIVE_BASES = """red yellow green blue purple pink brown black white gray grey golden beige
maroon navy teal turquoise violet crimson scarlet silver gold dark pale bright colorful colourful
multicolored multicoloured big small large little tiny huge giant tall short long wide narrow
thick thin round flat deep shallow high low full empty heavy old new young modern ancient
antique vintage fresh ripe rotten clean dirty messy neat tidy wet dry hot cold warm cool icy
sunny cloudy rainy snowy foggy windy stormy misty hazy grassy sandy rocky muddy dusty rusty shiny
furry fluffy hairy leafy wooden woolen woollen happy sad angry pretty beautiful cute ugly nice
good bad busy quiet calm open asleep awake alive dead ready afraid upright lush tasty delicious
healthy sweet sour spicy juicy raw same different whole entire double main far distant close
upper lower inner outer outdoor indoor public private rural urban wild domestic male female
elderly teenage electric electronic digital professional traditional typical local natural
artificial fake real smooth rough soft hard loud fancy plain simple formal casual sleek dim
blurry sparse dense steep skinny slim fat muscular bald blond blonde curly straight wavy elegant
cozy cosy spacious miniature first second third fourth fifth last next previous left right
cheerful playful peaceful wonderful strange unusual funny silly lovely lonely friendly early
daily holy jolly chubby plump sturdy wobbly fuzzy glossy matte transparent clear opaque bare
naked sharp blunt tight loose rectangular circular oval triangular polka tropical arctic sunlit
overcast abandoned famous curious nervous enormous gorgeous mysterious luxurious vast brilliant
cheap expensive rich poor strong weak fast slow quick lazy sleepy tired hungry thirsty sick ill
proud shy brave gentle fierce tame adorable""".split()


def _doubles(word: str) -> bool:
    """Whether the last consonant doubles before -ing / -ed / -er ("sit" → "sitting")."""
    if len(word) < 3 or word[-1] in "aeiouwxy" or word[-2] not in "aeiou" or word[-3] in "aeiou":
        return False
    return len(re.findall(r"[aeiou]+", word)) == 1


def _grades(adjective: str) -> tuple[str, str]:
    """Comparative and superlative of a short adjective: "big" → ("bigger", "biggest")."""
    a = adjective
    if a.endswith("e"):
        return a + "r", a + "st"
    if a.endswith("y") and a[-2] not in "aeiou":
        return a[:-1] + "ier", a[:-1] + "iest"
    if _doubles(a):
        return a + a[-1] + "er", a + a[-1] + "est"
    return a + "er", a + "est"


#: Adjectives (with the grades of the short ones) and ordinals: never the head of a phrase.
ADJECTIVES = frozenset(_ADJECTIVE_BASES) | (
    frozenset(g for a in _ADJECTIVE_BASES if len(a) <= 6 for g in _grades(a))
    - frozenset("cooler cleaner fitter dimmer opener thinner warmer tamer liner".split())
)
#: Suffixes of adjectives, for words in no table ("spotless", "reddish"), with the nouns that
#: end the same way.
_ADJECTIVE_SUFFIXES = ("ful", "ous", "less", "ish", "able", "ible")
_NOT_ADJECTIVES = frozenset(
    """handful mouthful spoonful armful bucketful cupful basketful plateful radish relish
    polish finish parish varnish furnish vegetable timetable turntable constable""".split()
)

# --- verbs ------------------------------------------------------------------------------------
# Three classes of base forms, by how a form that can also be a noun reads after a noun:
# _STRICT ones are verbs there whatever the number ("a man eat" is a slip, not a compound);
# _VERBAL ones are verbs in their -s form after a singular noun ("a man *stands*") and nouns
# in their base form ("a fruit *stand*"); _NOMINAL ones lean to the noun even in the -s form
# ("street *signs* on a pole") unless an object follows ("a man *signs* papers").

_STRICT = """sit eat hold graze wear carry chase fetch perch hover laugh chat prepare sip grab hug
climb soar stare gaze lick chew roam wander leap kneel crouch squat throw sell buy contain
surround overlook sleep sing appear seem become remain get go come take make give see bring put
sniff nibble munch devour bathe wade lie lay hang write wait reach pull bend enter hurry relax
pretend admire examine observe inspect explore visit gather peck nap sprawl stroll jog hike
gallop trot swim fly descend ascend repair fix carve stir bake toss grip clutch cradle
nuzzle cuddle groom bite share decorate arrange await enjoy frown yawn growl meow spill pour
rinse sweep scrub cling dangle sway lounge doze lean gnaw pluck snuggle slurp splash tend tow
haul drag arrive depart follow deliver unload grasp depict include glance peek speak shout yell
listen hear learn teach construct operate reflect compete perform celebrate raise receive pay
begin mow knead dig weave sew freeze win lose find think know keep meet send spend tell say
protect""".split()
_VERBAL = """stand walk run play ride look rest jump dance kick catch pose smile drink watch serve
mix wash feed push use swing grow burn shine glow hunt work talk read call help open close fill
pass drive cross dive float glide bark move travel approach draw build lead shave blow twist fold
melt drip flow blend bloom taste steer sprint stretch launch huddle count return finish tear
fight shoot""".split()
_NOMINAL = """wave sign light plant leave head face hand brush dress water paint dock land ship
train bike shop camp line cover park fish slice row paddle sail slide skate turn step spin roll
crash fall smoke point pitch race show cut cook stop kiss hit tie chop grill pet mop vacuum
polish shake lift guard shelter scoop peel grate stroke wrap sprout score record text feature
display place set drop load pick rake trim block pile stack crowd pack spot skateboard snowboard
ski surf comb herd guide notice harvest study break hide spread fry""".split()

#: base → (simple past, past participle) where they are not base + "-ed"; "" where the form
#: is left out because it is mostly a noun ("saw", "felt", "left").
_IRREGULAR_VERBS: dict[str, tuple[str, str]] = {
    "sit": ("sat", "sat"),
    "stand": ("stood", "stood"),
    "run": ("ran", "run"),
    "eat": ("ate", "eaten"),
    "hold": ("held", "held"),
    "ride": ("rode", "ridden"),
    "fly": ("flew", "flown"),
    "lie": ("lay", "lain"),
    "lay": ("laid", "laid"),
    "swim": ("swam", "swum"),
    "drive": ("drove", "driven"),
    "hang": ("hung", "hung"),
    "wear": ("wore", "worn"),
    "sleep": ("slept", "slept"),
    "feed": ("fed", "fed"),
    "grow": ("grew", "grown"),
    "throw": ("threw", "thrown"),
    "catch": ("caught", "caught"),
    "bring": ("brought", "brought"),
    "take": ("took", "taken"),
    "make": ("made", "made"),
    "give": ("gave", "given"),
    "see": ("", "seen"),
    "go": ("went", "gone"),
    "come": ("came", "come"),
    "fall": ("fell", "fallen"),
    "bite": ("", "bitten"),
    "write": ("wrote", "written"),
    "read": ("read", "read"),
    "sing": ("sang", "sung"),
    "drink": ("drank", "drunk"),
    "shake": ("shook", "shaken"),
    "sweep": ("swept", "swept"),
    "leave": ("", ""),
    "sell": ("sold", "sold"),
    "buy": ("bought", "bought"),
    "cut": ("cut", "cut"),
    "put": ("put", "put"),
    "hit": ("hit", "hit"),
    "light": ("lit", "lit"),
    "spin": ("spun", "spun"),
    "swing": ("swung", "swung"),
    "get": ("got", "gotten"),
    "shine": ("shone", "shone"),
    "slide": ("slid", "slid"),
    "become": ("became", "become"),
    "lean": ("leant", "leant"),
    "kneel": ("knelt", "knelt"),
    "leap": ("leapt", "leapt"),
    "dive": ("dove", "dived"),
    "burn": ("burnt", "burnt"),
    "cling": ("clung", "clung"),
    "bend": ("bent", "bent"),
    "dig": ("dug", "dug"),
    "draw": ("drew", "drawn"),
    "build": ("built", "built"),
    "lead": ("led", "led"),
    "speak": ("spoke", "spoken"),
    "teach": ("taught", "taught"),
    "hear": ("heard", "heard"),
    "begin": ("began", "begun"),
    "pay": ("paid", "paid"),
    "blow": ("blew", "blown"),
    "set": ("set", "set"),
    "freeze": ("froze", "frozen"),
    "break": ("broke", "broken"),
    "tear": ("tore", "torn"),
    "fight": ("fought", "fought"),
    "win": ("won", "won"),
    "lose": ("lost", "lost"),
    "find": ("found", "found"),
    "think": ("", ""),
    "know": ("knew", "known"),
    "keep": ("kept", "kept"),
    "meet": ("met", "met"),
    "send": ("sent", "sent"),
    "spend": ("spent", "spent"),
    "tell": ("told", "told"),
    "say": ("said", "said"),
    "hide": ("hid", "hidden"),
    "weave": ("wove", "woven"),
    "sew": ("sewed", "sewn"),
    "spread": ("spread", "spread"),
    "shoot": ("", ""),
    "stroke": ("stroked", "stroked"),
}
#: Verbs whose past participle is their base form ("cut", "put").
_SAME_PARTICIPLE = frozenset(base for base, (_, pp) in _IRREGULAR_VERBS.items() if pp == base)
#: -ing words that are also nouns: a phrase's head when nothing nominal follows them.
_ING_NOUNS = frozenset(
    """building painting ceiling clothing railing wedding evening morning king ring string
    thing wing sling swing spring sibling pudding dumpling duckling seedling sapling icing
    frosting filling topping stuffing bedding awning lightning siding flooring carving drawing
    crossing landing opening clearing earring stocking herring starling gosling viking ping
    sting offering lodging wiring piping plumbing housing dressing seasoning""".split()
)
#: -ed words that are no participles.
_ED_WORDS = frozenset(
    """hundred bed seabed sled bobsled shed sacred naked wicked rugged jagged ragged crooked
    kindred hatred homestead sunbed hotbed flowerbed riverbed""".split()
)
#: -ly words that are nouns (other -ly words are adverbs, or adjectives from the table).
_LY_NOUNS = frozenset(
    """family fly belly jelly lily bully ally rally butterfly dragonfly firefly housefly holly
    gully tally assembly supply reply anomaly monopoly dolly trolly lolly filly billy""".split()
)
#: Nouns that take a plural verb though they do not end in -s ("cattle *graze*").
_PLURAL_NOUNS = frozenset("cattle police poultry livestock folk people".split())
#: Plurals that modify a noun without ending its phrase ("a sports car").
_PLURAL_MODIFIERS = frozenset("sports arts sales customs savings goods".split())


def _forms(base: str) -> dict[str, str]:
    """A verb's forms → their kind: "base", "s", "past", "ing" or "ed" (participle)."""
    if base.endswith(("s", "x", "z", "ch", "sh")) or base in ("go", "do"):
        third = base + "es"
    elif base.endswith("y") and base[-2] not in "aeiou":
        third = base[:-1] + "ies"
    else:
        third = base + "s"
    if base.endswith("ie"):
        ing = base[:-2] + "ying"
    elif base.endswith("e") and not base.endswith(("ee", "ye", "oe")):
        ing = base[:-1] + "ing"
    else:
        ing = base + (base[-1] if _doubles(base) else "") + "ing"
    if base.endswith("e"):
        past = base + "d"
    elif base.endswith("y") and base[-2] not in "aeiou":
        past = base[:-1] + "ied"
    else:
        past = base + (base[-1] if _doubles(base) else "") + "ed"
    forms = {base: "base", third: "s", ing: "ing"}
    simple, participle = _IRREGULAR_VERBS.get(base, (past, past))
    for word, kind in ((participle, "ed"), (simple, "past")):  # "sliced" can modify a noun
        if word and word not in forms:
            forms[word] = kind
    return forms


def _verb_table() -> dict[str, tuple[str, str]]:
    table: dict[str, tuple[str, str]] = {}
    for cls, bases in (("nominal", _NOMINAL), ("strict", _STRICT), ("verbal", _VERBAL)):
        for base in bases:
            for word, kind in _forms(base).items():
                table.setdefault(word, (cls, kind))
    return table


#: Every form of the verbs above → (class, kind): class "strict", "verbal" or "nominal" (see
#: the comment above), kind "base", "s", "past", "ing" or "ed".
VERB_FORMS: dict[str, tuple[str, str]] = _verb_table()

# --- nouns that name no object ----------------------------------------------------------------

#: Words about the picture, not in it.
PICTURE_WORDS = frozenset(
    """image photo photograph picture pic view scene shot snapshot closeup close-up background
    foreground distance depiction""".split()
)
#: Places relative to something: no object when "of" follows or no noun modifies them.
RELATIONAL = frozenset(
    """front top middle center centre bottom side edge rear inside outside forefront midst
    interior exterior underside surface corner back end""".split()
)
#: Amounts and groups: before "of", the object is what follows ("a herd *of elephants*").
QUANTITIES = frozenset(
    """group bunch couple lot number pair variety herd flock crowd pack set collection assortment
    kind type sort piece slice row line stack pile bundle handful dozen hundred thousand array
    cluster team school swarm litter selection range series amount bit load mass sea troop
    gaggle band family pod colony army fleet heap batch plenty majority mix mixture""".split()
)

# --- tagging ----------------------------------------------------------------------------------

_TOKEN = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*|'|&|[^\w\s]")
_NOMINAL_TAGS = ("NOUN", "PRON")


@dataclass
class _Token:
    word: str
    tag: str  # after _lexical: DET NUM PRON PREP CONJ REL AUX ADV ADJ OPEN ING ED VERB POSS PUNCT
    cls: str | None = None  # a verb's class, for OPEN words in VERB_FORMS
    kind: str = ""  # a verb form's kind, for OPEN words in VERB_FORMS
    value: int | None = None  # a number's value
    noun_ok: bool = False  # an -ing word that can be a noun ("painting")


def _tokens(text: str) -> list[str]:
    words: list[str] = []
    for token in _TOKEN.findall(text.lower().replace("\u2019", "'").replace("\u2018", "'")):
        if token.endswith("'s") and len(token) > 2:
            words += [token[:-2], "'s"]
        else:
            words.append(token)
    return words


def _plural(word: str) -> bool:
    return word in _PLURAL_NOUNS or (singular(word) != word and word not in _PLURAL_MODIFIERS)


def _adjective_by_suffix(word: str) -> bool:
    if word in _NOT_ADJECTIVES or len(word) <= 5 or word.endswith(("fish", "dish", "table")):
        return False
    return word.endswith(_ADJECTIVE_SUFFIXES)


def _lexical(word: str) -> _Token:
    """A word's tag from the tables and its shape alone."""
    if word in NUMBERS:
        return _Token(word, "NUM", value=NUMBERS[word])
    if word.isascii() and word.isdigit():
        return _Token(word, "NUM", value=int(word) if len(word) <= 4 else None)
    for table, tag in (
        (AUXILIARIES, "AUX"),
        (DETERMINERS, "DET"),
        (PRONOUNS, "PRON"),
        (PREPOSITIONS, "PREP"),
        (CONJUNCTIONS, "CONJ"),
        (_RELATIVES, "REL"),
        (ADVERBS, "ADV"),
        (ADJECTIVES, "ADJ"),
    ):
        if word in table:
            return _Token(word, tag)
    if word in ("that", "'s", "'") or not word[0].isalnum():
        return _Token(word, word if word in ("that", "'s", "'") else "PUNCT")
    if any(c.isnumeric() for c in word):
        return _Token(word, "ADJ")  # "3d", "2nd", "4x4", "½"
    if word in VERB_FORMS:
        cls, kind = VERB_FORMS[word]
        if kind == "past":
            return _Token(word, "VERB", cls, kind)
        if kind in ("ing", "ed"):
            return _Token(word, kind.upper(), cls, kind, noun_ok=word in _ING_NOUNS)
        return _Token(word, "OPEN", cls, kind)
    if "-" in word.strip("-"):
        last = _lexical(word.rsplit("-", 1)[1])  # "well-dressed", "black-and-white", "t-shirt"
        if last.tag in ("ADJ", "ING", "ED") or last.word == "old":
            return _Token(word, "ADJ")
        return _Token(word, "OPEN")
    if word in _ING_NOUNS:
        return _Token(word, "ING", noun_ok=True)
    if word.endswith("ing") and len(word) >= 6:
        return _Token(word, "ING")
    if (
        word.endswith("ed")
        and len(word) > 4
        and not word.endswith(("eed", "ead"))
        and word not in _ED_WORDS
    ):
        return _Token(word, "ED")
    if word.endswith("ly") and len(word) > 4 and word not in _LY_NOUNS:
        return _Token(word, "ADV")
    if _adjective_by_suffix(word):
        return _Token(word, "ADJ")
    return _Token(word, "OPEN")


def _object_follows(after: _Token | None) -> bool:
    """Whether the next word opens an object, so the word before it is a transitive verb."""
    if after is None:
        return False
    if after.tag in ("DET", "NUM", "ADJ", "'"):
        return True
    if after.tag == "PRON":
        return after.word not in _SUBJECT_PRONOUNS or after.word in ("it", "you")
    return after.tag == "OPEN" and after.cls is None


def _number(tokens: list[_Token], end: int) -> str | None:
    """The number of the noun phrase ending at ``end``: "sg!" when its determiner says singular,
    "pl", "sg", "and" when it is the second of two joined by "and" ("a man and a woman"), or
    None when nothing tells (an unchanged noun, a phrase after "of")."""
    start = end
    while start > 0 and tokens[start - 1].tag in ("NOUN", "ADJ", "MOD"):
        start -= 1
    k = start - 1
    if k >= 0 and tokens[k].tag in ("DET", "NUM"):
        k -= 1
    if k >= 1 and tokens[k].word in ("and", "&") and tokens[k - 1].tag == "NOUN":
        return "and"
    before = tokens[start - 1] if start > 0 else None
    if before is not None:
        if before.tag == "NUM":
            return "sg!" if before.value == 1 else "pl"
        if before.word in _SINGULAR_DETERMINERS:
            return "sg!"
        if before.word in _PLURAL_DETERMINERS:
            return "pl"
        if before.word == "of":
            return None
    return _morph(tokens[end].word)


def _morph(head: str) -> str | None:
    if head in _UNCHANGED:
        return None
    return "pl" if _plural(head) else "sg"


def _after_noun(tokens: list[_Token], i: int, prev: int) -> str:
    """Noun or verb, for a word that can be either, right after the noun at ``prev``."""
    t = tokens[i]
    after = tokens[i + 1] if i + 1 < len(tokens) else None
    number = _number(tokens, prev)
    if t.cls == "strict":
        return "VERB"
    if t.kind == "s" or (t.cls is None and _plural(t.word) and t.word not in _UNCHANGED):
        if number == "and":  # "a man in a suit and tie *stands*": it agrees with the man
            return "VERB" if t.cls == "verbal" or _object_follows(after) else "NOUN"
        if number == "pl":
            # "two orange *crosses*": the plural head of a phrase still open; after a plural
            # noun, a verb's -s form is a slip for its base ("dogs *runs*"), a noun's is a list
            closed = _plural(tokens[prev].word)
            return "VERB" if closed and t.cls in ("strict", "verbal") else "NOUN"
        if number is None and _plural(tokens[prev].word):
            return "VERB"  # "a crowd of fans *cheers*": it agrees with the noun before "of"
        if number == "sg!" or t.cls == "verbal":
            return "VERB"
        return "VERB" if _object_follows(after) else "NOUN"
    # a base form: a plural subject's verb, or the second noun of a compound ("fruit stand")
    if number in ("pl", "and"):
        if t.cls:
            return "VERB"
        free = after is None or after.tag in ("DET", "NUM", "PREP", "ADV", "PUNCT", "CONJ")
        return "VERB" if free or (after.tag == "PRON" and after.word not in ("there",)) else "NOUN"
    if number is None and t.cls == "verbal":
        return "VERB"
    if number is None and t.cls == "nominal":
        return "VERB" if _object_follows(after) or (after and after.tag == "PREP") else "NOUN"
    if t.word in _SAME_PARTICIPLE and after is not None and after.tag == "PREP":
        return "VERB"  # "a pizza *cut* into slices", not a compound
    return "NOUN"


def _resolve_open(tokens: list[_Token], i: int) -> str:
    """NOUN or VERB for an OPEN word, from the words around it."""
    t = tokens[i]
    after = tokens[i + 1] if i + 1 < len(tokens) else None
    p = i - 1
    while p >= 0 and tokens[p].tag == "ADV":  # "a dog *quickly* runs": look past adverbs
        p -= 1
    if p < 0 or tokens[p].tag == "PUNCT":
        return "NOUN"  # captions open with a noun phrase ("fries on a plate")
    prev = tokens[p]
    if prev.tag == "NOUN":
        return _after_noun(tokens, i, p)
    if prev.tag == "PRON":
        if prev.word not in _SUBJECT_PRONOUNS or prev.word in ("there",):
            return "NOUN"
        if t.cls or (t.kind == "s") == (prev.word not in _PLURAL_PRONOUNS):
            return "VERB"
        return "NOUN"
    if prev.tag == "REL" or (prev.tag == "AUX" and prev.word in _MODALS):
        return "VERB" if t.cls or t.kind == "s" or prev.tag == "AUX" else "NOUN"
    if prev.tag == "PREP":
        return "VERB" if prev.word == "to" and t.cls and t.kind == "base" else "NOUN"
    if prev.tag == "CONJ":
        if prev.word in _SUBORDINATORS:
            return "NOUN"
        q = p - 1
        while q >= 0 and tokens[q].tag == "ADV":
            q -= 1
        if q >= 0 and tokens[q].tag == "VERB" and (t.cls or t.kind == "s"):
            return "VERB"  # "sits and *eats*"
        if (
            q >= 0
            and tokens[q].tag == "NOUN"
            and t.kind == "s"
            and t.cls in ("strict", "verbal")
            and (_object_follows(after) or (after is not None and after.tag in ("PREP", "ADV")))
        ):
            return "VERB"  # "a man holds a cup and *drinks* from it"; "cups and *plates*"
        return "NOUN"
    if prev.tag in ("VERB", "ING", "ED"):
        return "VERB" if t.cls == "strict" else "NOUN"  # the object: "hold *cacti*"
    return "NOUN"  # after a determiner, number, adjective, possessive, "is" / "has"


def _nominal_next(tokens: list[_Token], i: int) -> bool:
    """Whether the word after ``i`` can carry on a noun phrase (so ``i`` may modify it)."""
    if i + 1 >= len(tokens):
        return False
    after = tokens[i + 1]
    if after.tag in ("ADJ", "ING", "ED"):
        return _nominal_next(tokens, i + 1) or after.noun_ok
    return after.tag == "OPEN" and after.cls != "strict"


def tag(text: str) -> list[tuple[str, str]]:
    """``(word, tag)`` for each word of ``text``, lower case: the chunker's reading.

    Tags: DET NUM PRON PREP CONJ REL AUX ADV ADJ NOUN VERB MOD (a participle modifying the next
    noun), POSS ("'s"), PUNCT.

    >>> tag("A man signs papers.")
    [('a', 'DET'), ('man', 'NOUN'), ('signs', 'VERB'), ('papers', 'NOUN'), ('.', 'PUNCT')]
    >>> [t for _, t in tag("street signs on a pole")]
    ['NOUN', 'NOUN', 'PREP', 'DET', 'NOUN']
    """
    return [(t.word, t.tag) for t in _tag(text)]


def _tag(text: str) -> list[_Token]:
    tokens = [_lexical(w) for w in _tokens(text)]
    for i, t in enumerate(tokens):
        prev = tokens[i - 1] if i else None
        if t.tag == "'s":
            t.tag = "AUX" if prev is not None and prev.tag == "PRON" else "POSS"
        elif t.tag == "'":
            plural_before = prev is not None and prev.tag == "NOUN" and prev.word.endswith("s")
            t.tag = "POSS" if plural_before else "PUNCT"
        elif t.tag == "that":
            # "in that room" / "a sign that says": a determiner before a noun, else a relative
            t.tag = "DET" if prev is None or prev.tag in ("PREP", "VERB") else "REL"
        elif t.tag == "OPEN":
            t.tag = _resolve_open(tokens, i)
        elif t.tag in ("ING", "ED"):
            nominal_before = prev is not None and prev.tag in _NOMINAL_TAGS
            passive = prev is not None and prev.tag == "AUX"
            if not nominal_before and not passive and _nominal_next(tokens, i):
                t.tag = "MOD"  # "a *sleeping* cat", "*sliced* apples"
            elif t.noun_ok and (prev is None or prev.tag in ("DET", "ADJ", "POSS", "NUM", "PREP")):
                t.tag = "NOUN"  # "a *painting* on the wall"
            else:
                t.tag = "VERB"
    return tokens


# --- chunks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NounPhrase:
    """A noun phrase found by :func:`chunks`: ``subject`` (singular head with up to two words
    before it), ``count`` from a number word or digit before it, and why it names no object
    (``skip``: "negated", "picture", "relational", "amount", "predicate"; "" when it does)."""

    subject: str
    count: int | None
    skip: str = ""


def _subject(words: list[str]) -> str:
    """The head (singular) and up to two words before it, keeping "and" between adjectives;
    the head alone when its modifiers are alternatives ("big or red").

    >>> _subject(["big", "or", "red", "dogs"]), _subject(["red", "and", "white", "bus"])
    ('dog', 'red and white bus')
    """
    head, mods = singular(words[-1]), words[:-1]
    if "or" in mods:  # "a big or red dog": neither modifier is a fact to check
        return head
    kept: list[str] = []
    k = len(mods) - 1
    while k >= 0 and sum(w not in ("and", "or", "&") for w in kept) < 2:
        kept.insert(0, mods[k])
        k -= 1
    if kept and kept[0] in ("and", "or", "&"):
        if k >= 0:
            kept.insert(0, mods[k])
        else:
            kept.pop(0)
    return " ".join([*kept, head])


def chunks(text: str) -> list[NounPhrase]:
    """Every noun phrase of ``text`` in order, including those that name no object (``skip``).

    >>> [(p.subject, p.skip) for p in chunks("a photo of two dogs without a leash")]
    [('photo', 'picture'), ('dog', ''), ('leash', 'negated')]
    """
    tokens = _tag(text)
    found: list[NounPhrase] = []
    negated_until = -1  # a negation reaches over "or" / "nor" ("without a hat or shoes")
    i = 0
    while i < len(tokens):
        if tokens[i].tag not in ("ADJ", "MOD", "NOUN"):
            i += 1
            continue
        start, run = i, []
        while i < len(tokens):
            t = tokens[i]
            if t.tag in ("ADJ", "MOD"):
                if run and tokens[run[-1]].tag == "NOUN":
                    break  # "a dog asleep": an adjective after the noun ends the phrase
                run.append(i)
            elif t.tag == "NOUN":
                run.append(i)
                if _plural(t.word) and t.word not in _PLURAL_NOUNS:
                    i += 1
                    break  # "two dogs play": a plural noun ends the phrase
            elif (
                t.word in ("and", "or", "&")
                and run
                and tokens[run[-1]].tag in ("ADJ", "MOD")
                and i + 1 < len(tokens)
                and tokens[i + 1].tag in ("ADJ", "MOD")
            ):
                run.append(i)  # "a red and white bus"
            else:
                break
            i += 1
        while run and tokens[run[-1]].tag != "NOUN":
            run.pop()
        if not run:
            continue
        end = run[-1]
        lead = start
        while lead > 0 and tokens[lead - 1].tag in ("DET", "NUM", "POSS"):
            lead -= 1
        before = tokens[lead - 1] if lead > 0 else None
        after = tokens[end + 1] if end + 1 < len(tokens) else None
        count = tokens[start - 1].value if start > 0 and tokens[start - 1].tag == "NUM" else None
        head = singular(tokens[end].word)
        modified = any(tokens[j].tag == "NOUN" for j in run[:-1])
        if (
            any(tokens[j].word in ("no", "neither") for j in range(lead, start))
            or (before is not None and before.word in ("without", "not", "nor", "never"))
            or (before is not None and before.word in ("or", "nor") and negated_until == lead - 2)
        ):
            skip = "negated"
        elif head in PICTURE_WORDS:
            skip = "picture"
        elif head in RELATIONAL and (not modified or (after is not None and after.word == "of")):
            skip = "relational"
        elif head in QUANTITIES and after is not None and after.word == "of":
            skip = "amount"
        elif (
            lead == start
            and before is not None
            and before.word in _COPULAS
            and not (lead >= 2 and tokens[lead - 2].word == "there")
            and not _plural(tokens[end].word)
        ):
            skip = "predicate"  # "the wall is brick", "the grass looks verdant"
        else:
            skip = ""
        if skip == "negated":
            negated_until = end
        found.append(NounPhrase(_subject([tokens[j].word for j in run]), count, skip))
    return found


def noun_phrases(text: str) -> list[tuple[str, int | None]]:
    """``(subject, count)`` for each noun phrase of ``text`` that names an object, in order.

    The subject is singular ("two red cars" → ``("red car", 2)``); ``count`` is set when a
    number word or digit leads the phrase.

    >>> noun_phrases("Two ties hang on a rack.")
    [('tie', 2), ('rack', None)]
    >>> noun_phrases("dishes and boxes on a shelf")
    [('dish', None), ('box', None), ('shelf', None)]
    """
    return [(p.subject, p.count) for p in chunks(text) if not p.skip]


def head_phrase(text: str) -> str:
    """The first noun phrase of a claim sentence (singular), or "" when it names none.

    >>> head_phrase("The brown dogs are asleep."), head_phrase("Sleeping puppies")
    ('brown dog', 'sleeping puppy')
    """
    phrases = noun_phrases(text)
    return phrases[0][0] if phrases else ""
