"""Routing rules: which profile serves a chunk, from the chunk's features.

A rule is `--when EXPR --profile NAME [--priority N]`; rules are tried by priority (lower
first, then oldest) and the first that matches wins; no match: the run's own profile. EXPR is
parsed by a tiny grammar, never evaluated as code:

    expr := term ("or" term)* ; term := factor ("and" factor)*
    factor := "not" factor | "(" expr ")" | FEATURE OP VALUE
    OP := < <= > >= == != ~      (~ : glob match, e.g. path ~ "docs/*.md")

Features: words, code_blocks, tables, language (en, de, fr, es, it, nl, pt, ru, zh, ja, ko,
ar, el, other), path (the document's path), type (txt, md, pdf, html).
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kg.db import Database
from kg.db.models import Document, RoutingRule, utcnow
from kg.errors import KgError, NotFoundError, UsageError

if TYPE_CHECKING:
    from kg.extraction.extractor import Extractor

log = logging.getLogger(__name__)
NUMERIC = ("words", "code_blocks", "tables")
TEXTUAL = ("language", "path", "type")
FEATURES = NUMERIC + TEXTUAL
OPS = ("<=", ">=", "==", "!=", "<", ">", "~")

_TOKEN = re.compile(r'\s*(?:(?P<op><=|>=|==|!=|<|>|~)|(?P<paren>[()])|"(?P<dq>[^"]*)"'
                    r"|'(?P<sq>[^']*)'|(?P<word>[^\s()<>=!~\"']+))")


@dataclass(frozen=True)
class Features:
    """What rules can look at in one chunk."""

    words: int
    code_blocks: int
    tables: int
    language: str
    path: str
    type: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_FENCE = re.compile(r"^\s*(```|~~~)", re.MULTILINE)
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)+\|?\s*$", re.MULTILINE)
_WORD = re.compile(r"\w+", re.UNICODE)
_STOPWORDS = {
    "en": {"the", "and", "of", "to", "is", "in", "that", "it", "with", "for"},
    "de": {"der", "die", "und", "das", "ist", "nicht", "mit", "ein", "eine", "auf"},
    "fr": {"le", "la", "les", "et", "est", "des", "une", "dans", "pour", "pas"},
    "es": {"el", "los", "las", "y", "es", "una", "por", "con", "para", "del"},
    "it": {"il", "gli", "e", "di", "che", "una", "per", "con", "non", "della"},
    "nl": {"de", "het", "een", "en", "van", "niet", "met", "voor", "zijn", "dat"},
    "pt": {"o", "os", "as", "e", "um", "uma", "com", "para", "não", "dos"},
}
_SCRIPTS = (("zh", r"[\u4e00-\u9fff]"), ("ja", r"[\u3040-\u30ff]"), ("ko", r"[\uac00-\ud7af]"),
            ("ru", r"[\u0400-\u04ff]"), ("ar", r"[\u0600-\u06ff]"), ("el", r"[\u0370-\u03ff]"))


def language(text: str) -> str:
    """A small local guess (script, then common words): no model, nothing downloaded."""
    sample = text[:4000]
    letters = max(1, sum(ch.isalpha() for ch in sample))
    for code, pattern in _SCRIPTS:
        if len(re.findall(pattern, sample)) / letters > 0.3:
            return code
    words = [w.lower() for w in _WORD.findall(sample)]
    scores = {code: sum(w in stop for w in words) for code, stop in _STOPWORDS.items()}
    best = max(scores, key=lambda c: scores[c])
    return best if scores[best] >= 2 else "other"


def features(text: str, path: str = "", kind: str = "") -> Features:
    """The features of one chunk of a document."""
    return Features(words=len(_WORD.findall(text)), code_blocks=len(_FENCE.findall(text)) // 2,
                    tables=len(_TABLE_RULE.findall(text)), language=language(text), path=path,
                    type=kind)


# -- the expression grammar ----------------------------------------------------------------

Predicate = Callable[[Features], bool]


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None or match.end() == pos:
            if expr[pos:].strip() == "":
                break
            raise UsageError(f"cannot read the rule at {expr[pos:pos + 20]!r}; write e.g. "
                             "--when 'words > 500 and code_blocks >= 1'")
        pos = match.end()
        kind = match.lastgroup or ""
        value = match.group(kind) if kind else ""
        out.append(("str" if kind in ("dq", "sq") else kind, value))
    return out


class _Parser:
    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.tokens = _tokens(expr)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise UsageError(f"the rule {self.expr!r} ends too soon; write FEATURE OP VALUE, "
                             "joined by and / or")
        self.i += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token[0] == "word" and token[1].lower() == word:
            self.i += 1
            return True
        return False

    def parse(self) -> Predicate:
        predicate = self.expr_()
        if self.peek() is not None:
            raise UsageError(f"unexpected {self.peek()[1]!r} in rule {self.expr!r}")  # type: ignore[index]
        return predicate

    def expr_(self) -> Predicate:
        parts = [self.term()]
        while self.keyword("or"):
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else (lambda f: any(p(f) for p in parts))

    def term(self) -> Predicate:
        parts = [self.factor()]
        while self.keyword("and"):
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else (lambda f: all(p(f) for p in parts))

    def factor(self) -> Predicate:
        if self.keyword("not"):
            inner = self.factor()
            return lambda f: not inner(f)
        token = self.peek()
        if token == ("paren", "("):
            self.i += 1
            inner = self.expr_()
            if self.peek() != ("paren", ")"):
                raise UsageError(f"a '(' is not closed in rule {self.expr!r}")
            self.i += 1
            return inner
        return self.comparison()

    def comparison(self) -> Predicate:
        kind, name = self.take()
        if kind != "word" or name not in FEATURES:
            raise UsageError(f"unknown feature {name!r} in rule {self.expr!r}; use one of "
                             f"{', '.join(FEATURES)}")
        kind, op = self.take()
        if kind != "op":
            raise UsageError(f"expected one of {' '.join(OPS)} after {name} in rule "
                             f"{self.expr!r} (got {op!r})")
        kind, raw = self.take()
        if kind not in ("word", "str"):
            raise UsageError(f"expected a value after {name} {op} in rule {self.expr!r}")
        return _compare(name, op, raw, self.expr)


def _compare(name: str, op: str, raw: str, expr: str) -> Predicate:
    if name in NUMERIC:
        if op == "~":
            raise UsageError(f"{name} is a number: compare it with < <= > >= == != in {expr!r}")
        try:
            number = float(raw)
        except ValueError:
            raise UsageError(f"{name} is a number, not {raw!r}, in rule {expr!r}") from None
        numeric: dict[str, Callable[[float, float], bool]] = {
            "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}
        test = numeric[op]
        return lambda f: test(float(getattr(f, name)), number)
    if op not in ("==", "!=", "~"):
        raise UsageError(f"{name} is text: compare it with ==, != or ~ (glob) in {expr!r}")
    if op == "~":
        return lambda f: fnmatch.fnmatch(str(getattr(f, name)), raw) or fnmatch.fnmatch(
            str(getattr(f, name)), f"*/{raw}")
    if op == "==":
        return lambda f: str(getattr(f, name)).lower() == raw.lower()
    return lambda f: str(getattr(f, name)).lower() != raw.lower()


def parse(expr: str) -> Predicate:
    """The predicate of a rule; a one-line UsageError says what is wrong with it."""
    if not expr.strip():
        raise UsageError("give the rule: --when 'words > 500 and code_blocks >= 1'")
    return _Parser(expr).parse()


# -- the table ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    id: int
    expr: str
    profile: str
    priority: int
    matches: Predicate

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "when": self.expr, "profile": self.profile,
                "priority": self.priority}


def add_rule(session: Session, expr: str, profile: str, priority: int = 100,
             by: str = "") -> RoutingRule:
    """Store a rule after checking its expression and that the profile exists."""
    from kg.profiles.storage import get_profile

    parse(expr)
    get_profile(session, profile)  # NotFoundError names the known profiles
    if not 0 <= priority <= 1_000_000:
        raise UsageError(f"--priority must be between 0 and 1000000 (got {priority})")
    row = RoutingRule(expr=expr, profile=profile, priority=priority, created_at=utcnow(),
                      created_by=by[:128])
    session.add(row)
    session.flush()
    return row


def delete_rule(session: Session, rule_id: int) -> None:
    row = session.get(RoutingRule, rule_id)
    if row is None:
        raise NotFoundError(f"no routing rule {rule_id}; see `kg admin routing list`")
    session.delete(row)


def rules(session: Session) -> list[Rule]:
    """Every rule in the order they are tried."""
    rows = session.scalars(select(RoutingRule).order_by(RoutingRule.priority, RoutingRule.id))
    return [Rule(r.id, r.expr, r.profile, r.priority, parse(r.expr)) for r in rows]


def choose(table: list[Rule], chunk: Features) -> Rule | None:
    """The first rule that matches, or None (the run's own profile serves)."""
    return next((rule for rule in table if rule.matches(chunk)), None)


class Router:
    """The routed extractors of one run: rules read once, each profile built on first need."""

    def __init__(self, db: Database, models_dir: Path | None) -> None:
        self.db = db
        self.models_dir = models_dir
        with db.session() as session:
            self.table = rules(session)
        self._documents: dict[int, tuple[str, str]] = {}
        self._built: dict[str, Extractor | None] = {}

    def _document(self, document_id: int) -> tuple[str, str]:
        if document_id not in self._documents:
            with self.db.session() as session:
                row = session.get(Document, document_id)
                self._documents[document_id] = (row.path, row.kind) if row else ("", "")
        return self._documents[document_id]

    def route(self, text: str, document_id: int) -> tuple[Extractor, int] | None:
        """The extractor and rule for a chunk, or None when no rule matches."""
        if not self.table:
            return None
        path, kind = self._document(document_id)
        rule = choose(self.table, features(text, path, kind))
        if rule is None:
            return None
        if rule.profile not in self._built:
            from kg.extraction.extractor import build

            try:
                with self.db.session() as session:
                    self._built[rule.profile] = build(session, rule.profile, self.models_dir)
            except KgError as exc:  # its server is down, or the profile was deleted
                log.warning("routing rule %d: profile %s cannot serve (%s); its chunks go to "
                            "the run's profile", rule.id, rule.profile, exc)
                self._built[rule.profile] = None
        extractor = self._built[rule.profile]
        return (extractor, rule.id) if extractor is not None else None

    def close(self) -> None:
        for extractor in self._built.values():
            if extractor is not None:
                extractor.close()
        self._built.clear()
