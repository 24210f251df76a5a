"""The readable text form of a segment condition: ``parse_condition``, ``format_condition``.

Grammar (keywords are lower case; ``or`` binds loosest, then ``and``, then ``not``)::

    condition := all ("or" all)*
    all       := unary ("and" unary)*
    unary     := "not" unary | "(" condition ")" | atom
    atom      := "trait" PATH OP VALUE               trait plan = "pro"
               | "trait" PATH "exists"               trait email exists
               | "trait" PATH "is" "missing"         trait phone is missing
               | "trait" PATH ("before"|"after") DURATION "ago"
                                                     trait signed_up_at before 30 days ago
               | "subscribed" "to" "marketing" | "unsubscribed" "from" "marketing"
               | "consented" "to" PURPOSE            consented to location
               | EVENT [where] QUANTITY "in" "the" "last" DURATION
                     `Product Viewed` where product_id = "X" at least once in the last 10 minutes
               | "no" EVENT [where] "in" "the" "last" DURATION
                     no `Order Completed` in the last 10 minutes
               | "in" "segment" SEGMENT_ID           in segment vip
               | MEASURE OP NUMBER                   clv > 200, orders >= 3, aov < 50
    where     := "where" PATH OP VALUE ("," PATH OP VALUE)*
    QUANTITY  := ("at least" | "at most" | "exactly") (N "times" | N "time" | "once")
    OP        := = != < > <= >= in contains
    VALUE     := "text" (JSON escapes) | number | true | false | null | "[" VALUE, ... "]"
    DURATION  := N unit (second(s), minute(s), hour(s), day(s), week(s)) | 1h30m style
    EVENT     := `Event Name` (in backticks)
    MEASURE   := clv (lifetime value) | orders (how many) | aov (average order value)

``format_condition`` writes the canonical form: one line, single spaces, parentheses only where
the tree needs them (an ``and`` or ``or`` inside another, a ``not`` of one), durations in the
largest whole unit, ``no X`` for exactly 0 and ``once`` for 1. ``parse_condition(format(t)) == t``
for every tree. Errors say where: ``line 1, col 23: expected a number after 'at least'``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from engine.decide.durations import parse_duration
from engine.segments.model import (
    PATH,
    PURPOSE,
    SEGMENT_ID,
    VALUE_MEASURES,
    VALUE_OPS,
    AllOf,
    AnyOf,
    Condition,
    Consent,
    EventCount,
    InSegment,
    Not,
    OrderValue,
    PropertyFilter,
    Scalar,
    SegmentInvalid,
    Subscription,
    TraitAge,
    TraitCompare,
    TraitExists,
    Value,
)

_UNITS = (("week", 604_800), ("day", 86_400), ("hour", 3_600), ("minute", 60), ("second", 1))
_UNIT_SECONDS = {name: size for name, size in _UNITS} | {f"{n}s": s for n, s in _UNITS}
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<event>`[^`\n]*`)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![A-Za-z0-9_.\-]))
  | (?P<op><=|>=|!=|=|<|>)
  | (?P<punct>[()\[\],])
  | (?P<word>[A-Za-z0-9_][A-Za-z0-9_.\-]*)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # string | event | number | op | punct | word | end
    text: str
    line: int
    col: int


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    pos, line, line_start = 0, 1, 0
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            col = pos - line_start + 1
            raise SegmentInvalid(f"line {line}, col {col}: unexpected character {source[pos]!r}")
        kind = match.lastgroup or ""
        text = match.group()
        if kind != "ws":
            tokens.append(Token(kind, text, line, pos - line_start + 1))
        for i, char in enumerate(text):
            if char == "\n":
                line, line_start = line + 1, pos + i + 1
        pos = match.end()
    tokens.append(Token("end", "", line, pos - line_start + 1))
    return tokens


class _Parser:
    def __init__(self, source: str) -> None:
        self.tokens = tokenize(source)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def fail(self, what: str) -> SegmentInvalid:
        tok = self.tok
        after = f" after '{self.tokens[self.i - 1].text}'" if self.i else ""
        found = "the end" if tok.kind == "end" else repr(tok.text)
        return SegmentInvalid(
            f"line {tok.line}, col {tok.col}: expected {what}{after}, found {found}"
        )

    def at_word(self, *words: str) -> bool:
        return self.tok.kind == "word" and self.tok.text in words

    def take(self) -> Token:
        tok = self.tok
        self.i += 1
        return tok

    def expect_word(self, word: str, what: str | None = None) -> None:
        if not self.at_word(word):
            raise self.fail(what or f"'{word}'")
        self.i += 1

    def parse(self) -> Condition:
        if self.tok.kind == "end":
            raise self.fail("a condition")
        tree = self.condition()
        if self.tok.kind != "end":
            raise self.fail("'and', 'or' or the end")
        return tree

    def condition(self) -> Condition:
        parts = [self.all()]
        while self.at_word("or"):
            self.i += 1
            parts.append(self.all())
        return parts[0] if len(parts) == 1 else AnyOf(tuple(parts))

    def all(self) -> Condition:
        parts = [self.unary()]
        while self.at_word("and"):
            self.i += 1
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else AllOf(tuple(parts))

    def unary(self) -> Condition:
        if self.at_word("not"):
            self.i += 1
            return Not(self.unary())
        if self.tok.text == "(" and self.tok.kind == "punct":
            self.i += 1
            inner = self.condition()
            if self.tok.text != ")":
                raise self.fail("')'")
            self.i += 1
            return inner
        return self.atom()

    def atom(self) -> Condition:
        tok = self.tok
        if tok.kind == "event":
            return self.event_count(negated=False)
        if tok.kind != "word":
            raise self.fail("a condition (trait, an `Event`, no, in segment, clv, ...)")
        word = tok.text
        if word in VALUE_MEASURES:
            return self.order_value()
        if word == "trait":
            return self.trait()
        if word == "no":
            self.i += 1
            return self.event_count(negated=True)
        if word == "subscribed":
            self.i += 1
            self.expect_word("to")
            self.expect_word("marketing")
            return Subscription(True)
        if word == "unsubscribed":
            self.i += 1
            self.expect_word("from")
            self.expect_word("marketing")
            return Subscription(False)
        if word == "consented":
            self.i += 1
            self.expect_word("to")
            if self.tok.kind != "word" or not PURPOSE.fullmatch(self.tok.text):
                raise self.fail("a consent purpose such as email_marketing")
            return Consent(self.take().text)
        if word == "in":
            self.i += 1
            self.expect_word("segment")
            if self.tok.kind != "word" or not SEGMENT_ID.fullmatch(self.tok.text):
                raise self.fail("a segment id (lower-case letters, digits, - and _)")
            return InSegment(self.take().text)
        raise self.fail("a condition (trait, an `Event`, no, in segment, clv, ...)")

    def order_value(self) -> Condition:
        measure = self.take().text
        if self.tok.kind != "op" or self.tok.text not in VALUE_OPS:
            raise self.fail("an operator (= != < > <= >=)")
        op = self.take().text
        if self.tok.kind != "number":
            raise self.fail(f"a number ({measure} compares with a number)")
        value = self.value()
        assert isinstance(value, int | float)
        return self.build(lambda: OrderValue(measure, op, value))

    def path(self, what: str) -> str:
        if self.tok.kind != "word" or not PATH.fullmatch(self.tok.text):
            raise self.fail(what)
        return self.take().text

    def trait(self) -> Condition:
        self.i += 1
        path = self.path("a trait name such as plan or address.country")
        if self.at_word("exists"):
            self.i += 1
            return TraitExists(path, True)
        if self.at_word("is"):
            self.i += 1
            self.expect_word("missing")
            return TraitExists(path, False)
        if self.at_word("before", "after"):
            relation = self.take().text
            seconds = self.duration()
            self.expect_word("ago")
            return TraitAge(path, relation, seconds)
        op, value = self.op_value(
            "an operator (= != < > <= >= in contains), exists, is missing, before or after"
        )
        return self.build(lambda: TraitCompare(path, op, value))

    def op_value(self, what: str) -> tuple[str, Value]:
        tok = self.tok
        if not (tok.kind == "op" or (tok.kind == "word" and tok.text in ("in", "contains"))):
            raise self.fail(what)
        self.i += 1
        value = self.value()
        if tok.text == "in" and not isinstance(value, tuple):
            raise SegmentInvalid(
                f'line {tok.line}, col {tok.col}: \'in\' needs a list such as ["a", "b"]'
            )
        if tok.text not in ("in", "contains") and isinstance(value, tuple):
            raise SegmentInvalid(
                f"line {tok.line}, col {tok.col}: '{tok.text}' compares with one value, not a list"
            )
        return tok.text, value

    def build(self, make: Callable[[], Condition]) -> Condition:
        start = self.tokens[self.i - 1]
        try:
            return make()
        except SegmentInvalid as exc:
            raise SegmentInvalid(f"line {start.line}, col {start.col}: {exc}") from None

    def value(self, nested: bool = False) -> Value:
        tok = self.tok
        if tok.kind == "punct" and tok.text == "[" and not nested:
            self.i += 1
            items: list[Scalar] = []
            if self.tok.text == "]":
                self.i += 1
                return ()
            while True:
                item = self.value(nested=True)
                assert not isinstance(item, tuple)
                items.append(item)
                if self.tok.text == ",":
                    self.i += 1
                    continue
                if self.tok.text == "]":
                    self.i += 1
                    return tuple(items)
                raise self.fail("',' or ']'")
        if tok.kind == "string":
            self.i += 1
            decoded: str = json.loads(tok.text)
            return decoded
        if tok.kind == "number":
            self.i += 1
            if any(c in tok.text for c in ".eE"):
                number = float(tok.text)
                if number in (float("inf"), float("-inf")):
                    raise SegmentInvalid(f"line {tok.line}, col {tok.col}: number out of range")
                return number
            return int(tok.text)
        if tok.kind == "word" and tok.text in ("true", "false", "null"):
            self.i += 1
            return {"true": True, "false": False, "null": None}[tok.text]
        raise self.fail(
            'a value ("text", a number, true, false, null'
            + ("" if nested else " or a [list]")
            + ")"
        )

    def duration(self) -> int:
        tok = self.tok
        if tok.kind == "number" and re.fullmatch(r"\d+", tok.text):
            self.i += 1
            unit = self.tok
            if unit.kind != "word" or unit.text not in _UNIT_SECONDS:
                raise self.fail("a unit (seconds, minutes, hours, days or weeks)")
            self.i += 1
            seconds = int(tok.text) * _UNIT_SECONDS[unit.text]
        elif tok.kind == "word" and re.fullmatch(r"(?:\d+(?:\.\d+)?[smhdw])+", tok.text):
            self.i += 1
            exact = parse_duration(tok.text)
            if exact != int(exact):
                raise SegmentInvalid(f"line {tok.line}, col {tok.col}: not whole seconds")
            seconds = int(exact)
        else:
            raise self.fail("a duration such as 10 minutes or 1h30m")
        if seconds <= 0:
            raise SegmentInvalid(f"line {tok.line}, col {tok.col}: a duration must be above 0")
        return seconds

    def event_count(self, *, negated: bool) -> Condition:
        if self.tok.kind != "event":
            raise self.fail("an event name in backticks, such as `Order Completed`")
        start = self.take()
        event = start.text[1:-1]
        if not event.strip():
            raise SegmentInvalid(f"line {start.line}, col {start.col}: empty event name")
        filters: list[PropertyFilter] = []
        if self.at_word("where"):
            self.i += 1
            while True:
                path = self.path("a property name such as product_id")
                op, value = self.op_value("an operator (= != < > <= >= in contains)")
                filters.append(PropertyFilter(path, op, value))
                if self.tok.text != ",":
                    break
                self.i += 1
        if negated:
            quantifier, count = "exactly", 0
        else:
            quantifier, count = self.quantity()
        self.expect_word("in", "'in the last'")
        self.expect_word("the", "'the last'")
        self.expect_word("last")
        within = self.duration()
        return EventCount(event, tuple(filters), quantifier, count, within)

    def quantity(self) -> tuple[str, int]:
        if self.at_word("at"):
            self.i += 1
            if not self.at_word("least", "most"):
                raise self.fail("'least' or 'most'")
            quantifier = f"at {self.take().text}"
        elif self.at_word("exactly"):
            quantifier = self.take().text
        else:
            raise self.fail("'where', 'at least', 'at most' or 'exactly'")
        if self.at_word("once"):
            self.i += 1
            return quantifier, 1
        tok = self.tok
        if tok.kind != "number" or not re.fullmatch(r"\d+", tok.text):
            raise self.fail("a number")
        self.i += 1
        n = int(tok.text)
        if not self.at_word("times", "time"):
            raise self.fail("'times'")
        self.i += 1
        return quantifier, n


def parse_condition(source: str) -> Condition:
    """The tree written in ``source``; ``SegmentInvalid`` naming line and column if malformed."""
    return _Parser(source).parse()


def format_value(value: Value) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def format_duration(seconds: int) -> str:
    for name, size in _UNITS:
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {name}{'' if n == 1 else 's'}"
    raise AssertionError("unreachable: every whole number of seconds has a unit")


def format_condition(condition: Condition) -> str:
    """The canonical text of a tree."""
    if isinstance(condition, AnyOf):
        return " or ".join(
            f"({format_condition(p)})" if isinstance(p, AnyOf) else format_condition(p)
            for p in condition.parts
        )
    if isinstance(condition, AllOf):
        return " and ".join(
            f"({format_condition(p)})" if isinstance(p, AllOf | AnyOf) else format_condition(p)
            for p in condition.parts
        )
    if isinstance(condition, Not):
        inner = format_condition(condition.inner)
        return f"not ({inner})" if isinstance(condition.inner, AllOf | AnyOf) else f"not {inner}"
    if isinstance(condition, TraitCompare):
        return f"trait {condition.path} {condition.op} {format_value(condition.value)}"
    if isinstance(condition, TraitExists):
        return f"trait {condition.path} {'exists' if condition.exists else 'is missing'}"
    if isinstance(condition, TraitAge):
        window = format_duration(condition.seconds)
        return f"trait {condition.path} {condition.relation} {window} ago"
    if isinstance(condition, Subscription):
        return "subscribed to marketing" if condition.subscribed else "unsubscribed from marketing"
    if isinstance(condition, Consent):
        return f"consented to {condition.purpose}"
    if isinstance(condition, InSegment):
        return f"in segment {condition.segment_id}"
    if isinstance(condition, OrderValue):
        return f"{condition.measure} {condition.op} {format_value(condition.value)}"
    if isinstance(condition, EventCount):
        where = ""
        if condition.where:
            where = " where " + ", ".join(
                f"{f.path} {f.op} {format_value(f.value)}" for f in condition.where
            )
        window = f"in the last {format_duration(condition.within)}"
        if condition.quantifier == "exactly" and condition.count == 0:
            return f"no `{condition.event}`{where} {window}"
        times = "once" if condition.count == 1 else f"{condition.count} times"
        return f"`{condition.event}`{where} {condition.quantifier} {times} {window}"
    raise TypeError(f"not a segment condition: {condition!r}")
