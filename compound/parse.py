"""Read `.cmp` text into a syntax tree (`Program`), reporting every syntax error.

The Lark grammar (`compound.lark`) is LALR. The reader lexes the whole file,
splits the tokens into statements (a line break ends a statement unless a
bracket is open) and parses each statement on its own: one broken statement
costs one error and the rest of the file is still read. A Lark `Transformer`
then turns each parse tree into the small frozen dataclasses below, every one
carrying its source span. Nothing in a file is ever evaluated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedToken, VisitError
from lark.lark import PostLex
from lark.tree import Meta

from compound.diagnostics import CompoundError, Diagnostic, error, suggest
from compound.grammar import grammar_text
from compound.ir import Span
from compound.limits import DEFAULT, Limits

# ---------------------------------------------------------------- syntax tree


@dataclass(frozen=True, slots=True)
class Name:
    text: str
    span: Span


@dataclass(frozen=True, slots=True)
class Literal:
    value: bool | int | float | str
    span: Span


@dataclass(frozen=True, slots=True)
class Ref:
    """`name`, `name[3]` or `name[i]`."""

    name: Name
    index: Name | Literal | None
    span: Span


@dataclass(frozen=True, slots=True)
class Option:
    key: Name
    value: Expr


@dataclass(frozen=True, slots=True)
class CallExpr:
    callee: Name
    args: tuple[Expr, ...]
    options: tuple[Option, ...]
    span: Span


Expr = Ref | Literal | CallExpr


@dataclass(frozen=True, slots=True)
class SystemDecl:
    name: Name
    span: Span


@dataclass(frozen=True, slots=True)
class ComponentDecl:
    name: Name
    call: CallExpr
    span: Span


@dataclass(frozen=True, slots=True)
class ConstDecl:
    name: Name
    value: Literal
    span: Span


@dataclass(frozen=True, slots=True)
class ParamDecl:
    """`param NAME = "text"`: text an optimizer may change, used as a const is."""

    name: Name
    value: Literal
    span: Span


@dataclass(frozen=True, slots=True)
class InputDecl:
    name: Name
    type: Name
    span: Span


@dataclass(frozen=True, slots=True)
class NodeDecl:
    """`name[size] : type ~ call` (sampled) or `... = call` (computed)."""

    name: Name
    size: Literal | None
    type: Name
    sampled: bool
    call: CallExpr
    span: Span


@dataclass(frozen=True, slots=True)
class OutputDecl:
    refs: tuple[Ref, ...]
    span: Span


Statement = ComponentDecl | ConstDecl | ParamDecl | InputDecl | NodeDecl | OutputDecl


@dataclass(frozen=True, slots=True)
class Program:
    """A parsed file: its system name and its statements in source order."""

    file: str
    text: str
    name: Name
    statements: tuple[Statement, ...]


# ---------------------------------------------------------------- reading

KEYWORDS = ("system", "component", "const", "param", "input", "output", "true", "false")

_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "LONG_STRING": "a string",
    "TILDE": "'~'",
    "EQUAL": "'='",
    "_COLON": "':'",
    "_COMMA": "','",
    "_LPAR": "'('",
    "_RPAR": "')'",
    "_LSQB": "'['",
    "_RSQB": "']'",
    "$END": "the end of the statement",
    **{f"_{k.upper()}": f"'{k}'" for k in KEYWORDS},
    **{k.upper(): f"'{k}'" for k in KEYWORDS},
}
_OPEN = {"_LPAR", "_LSQB"}
_STATEMENT_KEYWORDS = {f"_{k.upper()}" for k in KEYWORDS[:6]}
_CLOSE = {"_RPAR": "_LPAR", "_RSQB": "_LSQB"}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")


class _KeepLayout(PostLex):
    """Keeps NEWLINE and BAD_CHAR in the token stream although no rule uses them."""

    always_accept = ("NEWLINE", "BAD_CHAR")

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        return stream


@cache
def _parser() -> Lark:
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer="basic",
        start="statement",
        propagate_positions=True,
        postlex=_KeepLayout(),
    )


def parse(text: str, file: str = "<string>", limits: Limits = DEFAULT) -> Program:
    """Parse `.cmp` text; raise `CompoundError` with every syntax error found."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.source_bytes:
        message = f"the file is {size:,} bytes; the limit is {limits.source_bytes:,} (Limits.source_bytes)"
        raise error("too-big", message, Span(file=file, line=1, column=1, end_line=1, end_column=1))
    reader = _Reader(text, file, limits)
    statements = [s for chunk in reader.statements() if (s := reader.parse(chunk)) is not None]
    errors = reader.errors
    headers = [s for s in statements if isinstance(s, SystemDecl)]
    if not errors and (not statements or not isinstance(statements[0], SystemDecl)):
        span = (
            statements[0].span if statements else Span(file=file, line=1, column=1, end_line=1, end_column=1)
        )
        errors.append(Diagnostic("error", "missing-system", "a file must begin with 'system NAME'", span))
    errors += [
        Diagnostic(
            "error", "duplicate-system", "a file declares one system; this is a second 'system'", h.span
        )
        for h in headers[1:]
    ]
    if errors:
        raise CompoundError(errors, {file: text})
    return Program(
        file=file,
        text=text,
        name=headers[0].name,
        statements=tuple(s for s in statements if not isinstance(s, SystemDecl)),
    )


class _Reader:
    def __init__(self, text: str, file: str, limits: Limits):
        self.text = text
        self.file = file
        self.limits = limits
        self.errors: list[Diagnostic] = []
        self.build = _Build(file, limits)

    def error(self, code: str, message: str, token: Token) -> None:
        self.errors.append(Diagnostic("error", code, message, _span(self.file, token)))

    def statements(self) -> Iterator[list[Token]]:
        """Split the token stream into statements; drop layout; report bad characters.

        A keyword, or a name and ':' at the start of a line, cannot continue a
        call: seen inside brackets, it means a bracket was never closed, and
        the reader reports that bracket and goes on with the new statement.
        """
        chunk: list[Token] = []
        opened: list[Token] = []
        broken = False
        line_start = True  # the next token is the first on its line
        last_began_line = False  # chunk[-1] was the first token on its line
        tokens = _Lookahead(_parser().lex(self.text))  # lazily: a statement too big stops the reading
        for token in tokens:
            kind = token.type
            if opened and kind in _STATEMENT_KEYWORDS and tokens.next_is("EQUAL"):
                if not broken:
                    hint = (
                        '; a chat\'s system message is system_prompt="..."' if token.value == "system" else ""
                    )
                    self.error(
                        "syntax", f"'{token.value}' is a keyword, so it cannot name an option{hint}", token
                    )
                broken = True
                continue
            if kind == "NEWLINE":
                line_start = True
                if not opened:
                    if chunk and not broken:
                        yield chunk
                    chunk, broken = [], False
                continue
            starts = kind in _STATEMENT_KEYWORDS or (kind == "_COLON" and last_began_line)
            if opened and starts:
                if not broken:
                    self.error("syntax", f"{opened[0].value!r} was never closed", opened[0])
                restart = [chunk[-1]] if kind == "_COLON" else []
                chunk, opened, broken = restart, [], False
            last_began_line, line_start = line_start, False
            if kind == "BAD_CHAR":
                if token.value == '"':
                    self.error("syntax", "unterminated string", token)
                    return
                if not broken:
                    self.error("syntax", f"unexpected character {token.value!r}", token)
                broken = True
                continue
            if kind in _OPEN:
                opened.append(token)
                if len(opened) > self.limits.nesting and not broken:
                    self.error(
                        "too-big",
                        f"more than {self.limits.nesting} brackets open at once (Limits.nesting)",
                        token,
                    )
                    broken = True
            elif kind in _CLOSE and opened:
                match = opened.pop()
                if _CLOSE[kind] != match.type and not broken:
                    self.error(
                        "syntax",
                        f"{token.value!r} does not match {match.value!r} at {match.line}:{match.column}",
                        token,
                    )
                    broken = True
            if len(chunk) >= self.limits.statement_tokens:
                self.error(
                    "too-big",
                    f"a statement of more than {self.limits.statement_tokens:,} tokens "
                    "(Limits.statement_tokens); the file is not read past it",
                    chunk[0],
                )
                return
            chunk.append(token)
        if opened and not broken:
            self.error("syntax", f"{opened[0].value!r} was never closed", opened[0])
        elif chunk and not broken:
            yield chunk

    def parse(self, chunk: list[Token]) -> SystemDecl | Statement | None:
        parser = _parser().parse_interactive(start="statement")
        try:
            for token in chunk:
                parser.feed_token(token)
            tree = parser.feed_eof(chunk[-1])
        except UnexpectedToken as e:
            self.unexpected(e, chunk)
            return None
        try:
            built: SystemDecl | Statement = self.build.transform(tree)
            return built
        except VisitError as e:
            if not isinstance(e.orig_exc, CompoundError):
                raise
            self.errors += e.orig_exc.diagnostics
            return None

    def unexpected(self, e: UnexpectedToken, chunk: list[Token]) -> None:
        token = e.token
        expected = sorted({_WORDS.get(t, t) for t in e.expected})
        listed = ", ".join(expected[:-1]) + f" or {expected[-1]}" if len(expected) > 1 else expected[0]
        if token.type == "$END":
            token, got = chunk[-1], "the end of the statement"
            message = f"{got} came too early; expected {listed} after {chunk[-1].value!r}"
        else:
            got = _describe(token)
            message = f"unexpected {got}; expected {listed}"
        first = chunk[0]
        keyword = suggest(first.value, KEYWORDS[:6]) if first.type == "NAME" and token is not first else None
        if keyword:
            message += f"; did you mean '{keyword}' instead of '{first.value}'?"
        self.error("syntax", message, token)


def _span(file: str, at: Meta | Token) -> Span:
    """Where a token or a rule's match stands in `file`."""
    return Span(file=file, line=at.line, column=at.column, end_line=at.end_line, end_column=at.end_column)


class _Lookahead:
    """Tokens one at a time, with a look at the next one."""

    def __init__(self, tokens: Iterator[Token]):
        self.tokens = tokens
        self.ahead: list[Token] = []

    def __iter__(self) -> Iterator[Token]:
        return self

    def __next__(self) -> Token:
        return self.ahead.pop() if self.ahead else next(self.tokens)

    def next_is(self, kind: str) -> bool:
        """Whether the token after the current one is of `kind`."""
        if not self.ahead:
            found = next(self.tokens, None)
            if found is None:
                return False
            self.ahead.append(found)
        return self.ahead[0].type == kind


def _describe(token: Token) -> str:
    if token.type == "NAME":
        return f"name {token.value!r}"
    if token.type == "NUMBER":
        return f"number {token.value}"
    if token.type in ("STRING", "LONG_STRING"):
        return "string"
    return repr(token.value)


def _unescape(body: str, token: Token, quote: int, file: str) -> str:
    def replace(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] == "u" and len(code) == 5:
            return chr(int(code[1:], 16))
        if code in _ESCAPES:
            return _ESCAPES[code]
        assert token.line is not None and token.column is not None  # every lexed token has a position
        line = token.line + body.count("\n", 0, match.start())
        last = body.rfind("\n", 0, match.start())
        column = token.column + quote + match.start() if last < 0 else match.start() - last
        raise error(
            "bad-escape",
            f"unknown escape '\\{code}' in a string (known: \\n \\t \\r \\\" \\\\ \\uXXXX)",
            Span(file=file, line=line, column=column, end_line=line, end_column=column + 2),
        )

    return _ESCAPE.sub(replace, body)


@v_args(inline=True, meta=True)
class _Build(Transformer[Token, "SystemDecl | Statement"]):
    """Parse tree -> syntax tree dataclasses, with spans from rule metadata and tokens."""

    __visit_tokens__ = False

    def __init__(self, file: str, limits: Limits):
        super().__init__()
        self.file = file
        self.limits = limits

    def _span(self, at: Meta | Token) -> Span:
        return _span(self.file, at)

    def _name(self, token: Token) -> Name:
        return Name(str(token), self._span(token))

    def system(self, meta: Meta, name: Token) -> SystemDecl:
        return SystemDecl(self._name(name), self._span(meta))

    def component(self, meta: Meta, name: Token, _eq: Token, call: CallExpr) -> ComponentDecl:
        return ComponentDecl(self._name(name), call, self._span(meta))

    def const(self, meta: Meta, name: Token, _eq: Token, value: Literal) -> ConstDecl:
        return ConstDecl(self._name(name), value, self._span(meta))

    def param(self, meta: Meta, name: Token, _eq: Token, value: Literal) -> ParamDecl:
        return ParamDecl(self._name(name), value, self._span(meta))

    def input(self, meta: Meta, name: Token, type_: Token) -> InputDecl:
        return InputDecl(self._name(name), self._name(type_), self._span(meta))

    def output(self, meta: Meta, *refs: Ref) -> OutputDecl:
        return OutputDecl(refs, self._span(meta))

    def node(self, meta: Meta, name: Token, *rest: Token | Literal | CallExpr) -> NodeDecl:
        size = rest[0] if isinstance(rest[0], Literal) else None
        type_, op, call = rest[-3:]
        assert isinstance(type_, Token) and isinstance(op, Token) and isinstance(call, CallExpr)
        return NodeDecl(self._name(name), size, self._name(type_), op.type == "TILDE", call, self._span(meta))

    def plate(self, meta: Meta, size: Token) -> Literal:
        return self.number(meta, size)

    def call(self, meta: Meta, callee: Token, *arguments: Expr | Option | None) -> CallExpr:
        args = tuple(a for a in arguments if a is not None and not isinstance(a, Option))
        options = tuple(a for a in arguments if isinstance(a, Option))
        return CallExpr(self._name(callee), args, options, self._span(meta))

    def option(self, meta: Meta, key: Token, _eq: Token, value: Expr) -> Option:
        return Option(self._name(key), value)

    def ref(self, meta: Meta, name: Token, index: Token | None = None) -> Ref:
        if index is None:
            idx: Name | Literal | None = None
        else:
            idx = self._name(index) if index.type == "NAME" else self.number(index, index)
        return Ref(self._name(name), idx, self._span(meta))

    def string(self, meta: Meta, token: Token) -> Literal:
        quote = 3 if token.type == "LONG_STRING" else 1
        if len(token.value) - 2 * quote > self.limits.string_chars:
            limit = self.limits.string_chars
            raise error(
                "too-big",
                f"a string of more than {limit:,} characters (Limits.string_chars)",
                self._span(meta),
            )
        text = _unescape(token.value[quote:-quote], token, quote, self.file)
        if _SURROGATE.search(text):
            raise error(
                "bad-escape", "a string holds a lone surrogate, which is not a character", self._span(meta)
            )
        return Literal(text, self._span(meta))

    def number(self, meta: Meta | Token, token: Token) -> Literal:
        text: str = token.value
        if len(text) > self.limits.number_chars:
            raise error(
                "number",
                f"a number of {len(text):,} characters; the limit is {self.limits.number_chars} "
                "(Limits.number_chars)",
                self._span(token),
            )
        value: int | float = int(text) if re.fullmatch(r"-?\d+", text) else float(text)
        if not math.isfinite(value):
            raise error(
                "number", f"{text} is out of range (a finite number, below about 1.8e308)", self._span(token)
            )
        return Literal(value, self._span(token))

    def true(self, meta: Meta, token: Token) -> Literal:
        return Literal(True, self._span(meta))

    def false(self, meta: Meta, token: Token) -> Literal:
        return Literal(False, self._span(meta))
