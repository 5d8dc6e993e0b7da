"""Grounded decoding: the parts of a chunk a model may pick, as enums of the output schema.

Quotes are the chunk's sentences (long ones cut at clause boundaries); labels and relationship
ends are candidate spans from an offline, rule-based noun-phrase splitter: capitalised
sequences, then runs of words between stopwords and punctuation. Each value is verbatim text of
the chunk, so a label is text by construction and an end is always one of the labels offered.
In the `triples` shape laid out sentence by sentence (the small-model shape), a sentence's
rows offer the relations whose name it echoes (one echoed relation: its other rows the rest),
each with the objects its range can take (a year a span with a digit, a concept a name), and
its two rows take a subject's objects in turn.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from kg.extraction.chunking import LINE, is_layout, sentence_spans
from kg.extraction.vocabulary import CAMEL, stem_word

MAX_CANDIDATES = 64
MAX_QUOTES = 48
# Beyond these a grammar gets slow to compile, or a server refuses it: free text instead.
MAX_ENUM_VALUES = 160
MAX_ENUM_CHARS = 12_000
MAX_PHRASE_WORDS = 5
MIN_WORDS_FOR_ITEMS = 20  # as validation: shorter texts (a heading) may have nothing
MIN_CONCEPTS = 3
MAX_LOOP_FREE = 32  # candidates up to which the triples grammar rules out self-loops
TRIPLES_PER_SENTENCE = 2
MAX_TUPLE_SENTENCES = 6  # up to which the triples rows are laid out sentence by sentence
# Ablation switches (benchmarks/recall/BASELINE.md): surnames of full names are no subjects;
# a sentence's two rows take a subject's objects in turn (`_turn`). Both only for ontologies
# with ranges (`kinds`): on the default ontology's corpus they lowered untyped F1.
PIECELESS_SUBJECTS = True
TURNS = True
# A sentence's first row takes as subject one of the chunk's first names (`_topics`): SmolLM2
# otherwise opens with a name from the end of the sentence ("HBO", "CEO"). With ranges only.
TOPICS = 2
VALUE_KINDS = frozenset({"number", "date", "year"})  # literal ranges whose values hold digits
CONNECTORS = {"of", "de", "von", "van", "da", "del", "la", "le", "the", "and", "&", "di", "du",
              "des", "della", "dei", "do", "dos", "das", "der", "den", "y", "al", "el", "bin",
              "ibn"}
STOPWORDS = frozenset(str.split("""
a about above after again against all also although am an and any are as at be because been
before being below between both but by can could did do does doing down during each either
few for from further had has have having he her here hers herself him himself his how however
i if in into is it its itself just may me might more most must my myself no nor not now of
off on once one only or other our ours ourselves out over own same she should since so some
such than that the their theirs them themselves then there these they this those through thus
to too under until up upon very was we were what when where whether which while who whom whose
why will with within without would yet you your yours yourself yourselves many much often
several various every another its
"""))
IRREGULAR = frozenset(str.split("""was were wrote made built found took gave became began led
met knew saw went came said told held left lost won grew drew ran sent spoke"""))
# Forms whose stem differs from the noun a relation name uses ("born" -> birthPlace).
IRREGULAR_FORMS = {"born": "birth", "died": "death", "dies": "death", "dead": "death",
                   "wrote": "writer", "written": "writer", "led": "leader", "leads": "leader"}
CUE_WORD = re.compile(r"[a-z][a-z0-9]*")
CUE_PREFIX = 5  # "located"/"location" and "runways"/"runway" meet on their first letters
WORD = re.compile(r"[^\W_](?:[\w'’&-]*[^\W_])?")
# A full stop ends a clause, except after an initial ("Aaron S. Daggett").
BREAK = re.compile(r"[,;:()\[\]{}\"“”!?]|(?<!\b[A-Z])\.(?=\s|$)|\s[-–—]\s")
# Two names joined by a comma: a place and its region ("Greene, Maine").
NAME_PAIR = re.compile(r"\b[A-Z][\w'’-]+(?: [A-Z][\w'’-]+)*, [A-Z][\w'’-]+(?: [A-Z][\w'’-]+)*")


@dataclass(frozen=True)
class Span:
    text: str
    start: int
    end: int


def _words(text: str, start: int, end: int) -> list[re.Match[str]]:
    return list(WORD.finditer(text, start, end))


def _clauses(text: str) -> list[tuple[int, int]]:
    """Stretches of text between punctuation marks."""
    cuts = [0]
    for m in BREAK.finditer(text):
        cuts += [m.start(), m.end()]
    cuts.append(len(text))
    return [(a, b) for a, b in zip(cuts[::2], cuts[1::2], strict=False) if b > a]


def _capitalised(words: list[re.Match[str]], text: str) -> list[Span]:
    """Maximal sequences of capitalised words, allowing 'of', 'the'... between them."""
    found: list[Span] = []
    i = 0
    while i < len(words):
        if not words[i].group()[0].isupper():
            i += 1
            continue
        j = i
        while j + 1 < len(words):
            nxt = words[j + 1].group()
            gap = text[words[j].end():words[j + 1].start()]
            initial = gap.strip() == "." and len(words[j].group()) == 1 and nxt[0].isupper()
            if gap.strip() and not initial:
                break
            if nxt[0].isupper():
                j += 1
            elif (nxt.casefold() in CONNECTORS and j + 2 < len(words)
                  and words[j + 2].group()[0].isupper()
                  and not text[words[j + 1].end():words[j + 2].start()].strip()):
                j += 2
            else:
                break
        first = i
        # A capitalised stopword opening a sentence ("The", "In") is not part of a name.
        while first <= j and words[first].group().casefold() in STOPWORDS:
            first += 1
        if first <= j:
            found.append(Span(text[words[first].start():words[j].end()],
                              words[first].start(), words[j].end()))
        i = j + 1
    return found


def verbish(word: str) -> bool:
    """Past tenses and adverbs ("wrote" aside): never the start of a noun phrase."""
    return word.islower() and (word.endswith(("ed", "ly")) or word in IRREGULAR)


def _phrases(words: list[re.Match[str]], text: str, layout: bool = False) -> list[Span]:
    """Runs of non-stopwords (a noun phrase, roughly), plus the last word of longer runs.

    In layout (`is_layout`) a name is offered whole: no head noun or leading words cut off an
    all-capitalised run, and a lower-case word before a name ends the run."""
    found: list[Span] = []
    run: list[re.Match[str]] = []

    def flush() -> None:
        if run:
            tail = run[-MAX_PHRASE_WORDS:]
            found.append(Span(text[tail[0].start():tail[-1].end()], tail[0].start(),
                              tail[-1].end()))
            # A label on a slide is a name as written: "Turing" of "Alan Turing" is no noun.
            whole = layout and all(w.group()[0].isupper() for w in tail)
            if len(tail) > 1 and not whole:  # the head noun of "water vapour" is "vapour"
                found.append(Span(tail[-1].group(), tail[-1].start(), tail[-1].end()))
            if len(tail) > 2 and not whole:  # "water vapour rises": the last word may be the verb
                found.append(Span(text[tail[0].start():tail[-2].end()], tail[0].start(),
                                  tail[-2].end()))
            run.clear()

    for word in words:
        w = word.group()
        # A name followed by lower-case words ("Ada Lovelace wrote") is two phrases.
        case_break = (bool(run) and run[-1].group()[0].isupper() and w[0].islower()
                      and run[-1] is not words[0])  # a sentence's first word is no name
        # In layout the verb of "Solar Battery feeds Hiring Plan" is no part of a name.
        name_starts = layout and bool(run) and run[-1].group()[0].islower() and w[0].isupper()
        gap = bool(run) and bool(text[run[-1].end():word.start()].strip())
        if w.casefold() in STOPWORDS or case_break or name_starts or gap:
            flush()
            if w.casefold() in STOPWORDS or verbish(w):
                continue
        run.append(word)
    flush()
    return found


def candidates(text: str, limit: int = MAX_CANDIDATES, max_len: int = 60) -> list[Span]:
    """Noun-phrase-like spans of text with offsets: names first, then phrases; deduplicated
    (any case), at most `limit`, none longer than `max_len` characters."""
    names: list[Span] = []
    phrases: list[Span] = []
    clauses = _clauses(text)
    # Layout: each line is a phrase of its own (box labels side by side are lines, not one
    # name). A text with any sentence in it is cut at punctuation only, wherever lines break.
    layout = is_layout(text)
    if layout:
        clauses = [(max(a, m.start()), min(b, m.end())) for m in LINE.finditer(text)
                   for a, b in clauses if max(a, m.start()) < min(b, m.end())]
    for start, end in clauses:
        words = _words(text, start, end)
        names += _capitalised(words, text)
        phrases += _phrases(words, text, layout)
    pairs = [Span(m.group(), m.start(), m.end()) for m in NAME_PAIR.finditer(text)]
    seen: set[str] = set()
    out: list[Span] = []
    for span in [*names, *phrases, *pairs]:
        key = span.text.casefold()
        if key in seen or len(span.text) > max_len or len(span.text) < 2 or key in STOPWORDS:
            continue
        seen.add(key)
        out.append(span)
        if len(out) == limit:
            break
    return out


def _cut(text: str, start: int, end: int, max_len: int) -> list[tuple[int, int]]:
    """A span cut into pieces of at most max_len characters, at clause ends, else spaces."""
    if end - start <= max_len:
        return [(start, end)]
    window = text[start:start + max_len]
    cut = max(window.rfind(", "), window.rfind("; "), window.rfind(": "))
    cut = cut + 1 if cut > max_len // 3 else window.rfind(" ")
    if cut <= 0:
        cut = max_len
    head_end = start + cut
    rest = head_end
    while rest < end and text[rest].isspace():
        rest += 1
    return [(start, head_end), *_cut(text, rest, end, max_len)]


UNSAFE = re.compile(r'["\\]+')


def _without_unsafe(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The span split at double quotes and backslashes, trimmed, pieces of 3+ characters.

    llama-cpp-python's JSON-Schema-to-grammar converter writes such characters inside an
    enum into a grammar that llama.cpp then refuses to parse; verbatim pieces avoid them."""
    pieces = []
    cuts = [start, *(i for m in UNSAFE.finditer(text, start, end) for i in m.span()), end]
    for a, b in zip(cuts[::2], cuts[1::2], strict=False):
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if b - a >= 3:
            pieces.append((a, b))
    return pieces


def quotes(text: str, limit: int | None = MAX_QUOTES, max_len: int = 160) -> list[Span]:
    """The chunk's sentences (pieces of long ones), verbatim, deduplicated."""
    out: list[Span] = []
    seen: set[str] = set()
    for start, end in sentence_spans(text):
        for a, b in _cut(text, start, end, max_len):
            for piece_start, piece_end in _without_unsafe(text, a, b):
                piece = text[piece_start:piece_end]
                if piece not in seen:
                    seen.add(piece)
                    out.append(Span(piece, piece_start, piece_end))
    return out[:limit]


def _triple_items(item: dict[str, Any], labels: list[str], sentences: list[str],
                  objects: list[str] | None = None,
                  kinds: dict[str, str | None] | None = None,
                  turn: int | None = None,
                  topics: list[str] | None = None) -> dict[str, Any]:
    """A triple row whose subject, object and quote are spans of the text. With few enough
    candidates, one alternative per subject whose object enum leaves the subject out: the
    grammar cannot write a self-loop, nor pair a name with a piece of itself (small models
    otherwise copy the subject across). With `kinds` (relation -> literal kind of its range),
    a relation is offered only with objects its range can take (`_by_range`); with `turn`,
    the row is that one of its sentence's two rows (`_turn`), and its first row's subjects
    are `topics` when any of them is a subject."""
    props = item["properties"]
    quote = {"type": "string", "enum": sentences}
    relations = props.get("relation", {}).get("enum") or []
    # One alternative per subject, and llama.cpp follows every alternative through the quote:
    # names only (a subject is a name, "1955 Dodge" too), else decoding slows several-fold.
    subjects = [label for label in labels if _name_like(label)] or labels
    if PIECELESS_SUBJECTS and kinds:
        # A surname cut off a full name ("Madin" of "John Madin") is no subject of its own;
        # every alternative slows decoding.
        subjects = [s for s in subjects if not _surname(s, subjects)]
    if turn == 0 and topics:
        subjects = [s for s in subjects if s in topics] or subjects
    branches = [
        {**item, "properties": {**props, "quote": quote,
                                "subject": {"type": "string", "enum": [label]},
                                **({"relation": {**props["relation"], "enum": names}}
                                   if names != relations else {}),
                                "object": {"type": "string", "enum": objs}}}
        for label in subjects
        for names, group in _by_range(relations, _apart(label, objects or labels), kinds)
        for objs in [_turn(group, sentences[0], turn, label)] if objs
    ] if 1 < len(labels) <= MAX_LOOP_FREE else []
    if not branches:
        return {**item, "properties": {**props, "quote": quote,
                                       "subject": {"type": "string", "enum": labels},
                                       "object": {"type": "string", "enum": labels}}}
    return {"anyOf": branches}


def _turn(objects: list[str], sentence: str, turn: int | None, subject: str) -> list[str]:
    """A sentence's first row takes any of a subject's objects but the last in the sentence,
    its second any but the first: SmolLM2 otherwise writes one pair twice, and a sentence
    stating two facts of one subject names their objects in turn. A span overlapping the
    subject where it stands ("103 Colmore" of "Colmore Row") is no object of it."""
    if turn is None:
        return objects
    at = sentence.find(subject)
    if at >= 0:
        objects = [o for o in objects if o not in sentence
                   or not _overlap(sentence.find(o), len(o), at, len(subject))]
    if len(objects) < 2:
        return objects
    # Overlapping spans are one object here ("Pete Conrad" and "Conrad"): clusters of them
    # in the order they stand; an object elsewhere in the chunk stays in both rows.
    clusters: list[tuple[int, int, list[str]]] = []
    # Only names and values take turns: a lower-case phrase ("designed") is no fact's end
    # often enough to decide the turns.
    for start, o in sorted((sentence.find(o), o) for o in objects if o in sentence
                           and (_name_like(o) or any(c.isdigit() for c in o))):
        if clusters and start < clusters[-1][1]:
            a, b, members = clusters[-1]
            clusters[-1] = (a, max(b, start + len(o)), [*members, o])
        else:
            clusters.append((start, start + len(o), [o]))
    if len(clusters) < 2:
        return objects
    a, b, _ = clusters[-1 if turn == 0 else 0]
    return [o for o in objects
            if o not in sentence or not _overlap(sentence.find(o), len(o), a, b - a)]


def _topics(labels: list[str], text: str) -> list[str]:
    """The chunk's first TOPICS names (no surname pieces), apart from each other, in the order
    they stand: what a sentence of encyclopedic text is most often about."""
    names = [label for label in labels if _name_like(label)]
    names = [name for name in names if not _surname(name, names)]
    topics: list[str] = []
    for name in sorted(names, key=lambda n: (text.find(n), -len(n))):
        at = text.find(name)
        if len(topics) < TOPICS and not any(
                _overlap(at, len(name), text.find(t), len(t)) for t in topics):
            topics.append(name)
    return topics


def _overlap(a: int, a_len: int, b: int, b_len: int) -> bool:
    return a < b + b_len and b < a + a_len


def _by_range(relations: list[str], objects: list[str],
              kinds: dict[str, str | None] | None) -> list[tuple[list[str], list[str]]]:
    """(relations, objects) groups a row may pair, by the range of each relation (`kinds`):
    a number, date or year takes a span holding a digit; the rest a name-like span when all
    of them have a concept range, else any span but a bare value. SmolLM2 otherwise writes
    "1996" as a `country` and "Switzerland" as an `established`. Two groups at most: each
    is one more grammar alternative per subject, and decoding slows with their number.
    Without kinds, or when no group is left, one group: every relation, every object."""
    if not objects:
        return []
    if not kinds or not relations:
        return [(relations, objects)]
    values = [name for name in relations if kinds.get(name) in VALUE_KINDS]
    others = [name for name in relations if name not in values]
    concepts = all(kinds.get(name) == "concept" for name in others)
    groups = [(values, [o for o in objects if any(c.isdigit() for c in o)]),
              (others, [o for o in objects if _name_like(o)
                        or (not concepts and not o[0].isdigit())])]
    return [(names, objs) for names, objs in groups if names and objs] or [(relations, objects)]


def _surname(label: str, names: list[str]) -> bool:
    """One word ending another name of capitalised words only: "Madin" of "John Madin" (not
    "Lahore" of "City of Lahore")."""
    return " " not in label and any(
        name.endswith(" " + label) and all(w[0].isupper() for w in name.split())
        for name in names)


def _name_like(label: str) -> bool:
    return label[0].isupper() or (label[0].isdigit() and any(c.isupper() for c in label))


def _apart(label: str, labels: list[str]) -> list[str]:
    """The labels that neither hold nor lie inside `label` (any case): "Accademia" is no
    object for "Accademia di Architettura di Mendrisio"."""
    key = label.casefold()
    return [o for o in labels if o.casefold() not in key and key not in o.casefold()]


def _cue_keys(text: str) -> list[str]:
    """The content words of a sentence or a relation name (camelCase split), as short stems."""
    words = CUE_WORD.findall(CAMEL.sub(" ", text).casefold())
    return [stem_word(IRREGULAR_FORMS.get(w, w))[:CUE_PREFIX] for w in words
            if len(w) >= 3 and w not in STOPWORDS]


def cued_relations(sentence: str, relations: list[str]) -> list[str]:
    """The relations whose name the sentence echoes ("is located in" -> location), the
    best-echoed first, else in the ontology's order; none when the sentence names none."""
    keys = set(_cue_keys(sentence))
    scored = []
    for i, name in enumerate(relations):
        words = _cue_keys(name)
        hits = sum(w in keys for w in words)
        if hits:
            scored.append((-hits / len(words), i, name))
    return [name for *_, name in sorted(scored)]


def _with_relations(item: dict[str, Any], names: list[str]) -> dict[str, Any]:
    relation = item["properties"]["relation"]
    return {**item, "properties": {**item["properties"], "relation": {**relation,
                                                                     "enum": names}}}


def _sentence_rows(item: dict[str, Any], sentence: str) -> list[dict[str, Any]]:
    """The rows of one sentence. When a strict ontology's relations are an enum and the
    sentence echoes some, its rows pick among those: among dozens a small model picks a
    label nearly at random (benchmarks/recall/BASELINE.md). A sentence echoing one relation
    gives its other rows the rest: two rows would repeat one triple, and a sentence's second
    fact is often unsaid (`country`)."""
    every = item["properties"].get("relation", {}).get("enum") or []
    cued = cued_relations(sentence, every)
    rest = [name for name in every if name not in cued]
    if not cued or not rest:
        return [item] * TRIPLES_PER_SENTENCE
    others = cued if len(cued) > 1 else rest
    return [_with_relations(item, cued),
            *[_with_relations(item, others)] * (TRIPLES_PER_SENTENCE - 1)]


@dataclass(frozen=True)
class Grounded:
    """The schema sent for one chunk, and whether grounding fell back to free text."""

    schema: dict[str, Any]
    grounded: bool
    labels: int = 0
    quotes: int = 0


def grounded_schema(base: dict[str, Any], text: str, *, max_label: int = 60,
                    max_quote: int = 160, max_values: int = MAX_ENUM_VALUES,
                    max_chars: int = MAX_ENUM_CHARS,
                    kinds: dict[str, str | None] | None = None) -> Grounded:
    """`base` with labels, ends and quotes restricted to this chunk's text; `base` unchanged
    (grounded=False) when the chunk offers nothing, has more sentences than an enum may list
    (every one must stay quotable), or the enums exceed what servers take. `kinds` (relation
    name -> literal kind of its range, None for a concept) pairs relations with fitting ends."""
    labels = [s.text for s in candidates(text, max_len=max_label)]
    sentences = [s.text for s in quotes(text, limit=None, max_len=max_quote)]
    total = len(labels) + len(sentences)
    chars = sum(map(len, labels)) + sum(map(len, sentences))
    if (not labels or not sentences or len(sentences) > MAX_QUOTES or total > max_values
            or chars > max_chars):
        return Grounded(base, False)
    schema = copy.deepcopy(base)
    if "triples" in schema["properties"]:
        # The triples shape: subject and object are spans of the text (a literal value such
        # as a year is one too), the quote one of its sentences.
        node = schema["properties"]["triples"]
        if len(sentences) <= MAX_TUPLE_SENTENCES and 1 < len(labels) <= MAX_LOOP_FREE:
            # One prompt per sentence does best with a small model: here, in one call, the
            # rows go sentence by sentence, each quoting its sentence, its object a span of
            # that sentence (the subject may be named in an earlier one).
            rows = []
            topics = _topics(labels, text) if TOPICS and kinds else None
            for sentence in sentences:
                inside = [label for label in labels if label in sentence]
                rows += [_triple_items(row, labels, [sentence],
                                       inside if len(inside) > 1 else None, kinds,
                                       turn if TURNS and kinds else None, topics)
                         for turn, row in enumerate(_sentence_rows(node["items"], sentence))]
            node.pop("maxItems", None)
            node.update({"prefixItems": rows, "items": False, "minItems": len(rows),
                         "maxItems": len(rows)})
            return Grounded(schema, True, len(labels), len(sentences))
        node["items"] = _triple_items(node["items"], labels, sentences)
        # Small models repeat one triple until the limit: a few per sentence is what the
        # text can state, and every extra row costs a quote's worth of tokens.
        node["maxItems"] = min(node.get("maxItems", MAX_QUOTES),
                               max(2, TRIPLES_PER_SENTENCE * len(sentences)))
        if len(text.split()) >= MIN_WORDS_FOR_ITEMS and len(labels) > 1:
            node["minItems"] = 1
        return Grounded(schema, True, len(labels), len(sentences))
    if len(text.split()) >= MIN_WORDS_FOR_ITEMS:
        # Small models otherwise close both lists at once: a text with content names at
        # least a few things, and every pick is the text's own words.
        for key, least in (("concepts", min(MIN_CONCEPTS, len(labels))),
                           ("relationships", 1 if len(labels) > 1 else 0)):
            node = schema["properties"][key]
            node["minItems"] = min(least, node.get("maxItems", least))
    concept = schema["properties"]["concepts"]["items"]["properties"]
    relation = schema["properties"]["relationships"]["items"]["properties"]
    for node, key, values in ((concept, "label", labels), (concept, "quote", sentences),
                              (relation, "source", labels), (relation, "target", labels),
                              (relation, "quote", sentences)):
        node[key] = {"type": "string", "enum": values}
    return Grounded(schema, True, len(labels), len(sentences))
