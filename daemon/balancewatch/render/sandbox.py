"""The bounded sandbox every template renders in: Jinja's immutable sandbox over the template
files held in memory, compiled once, with the render budget's size checks built into the
compiled code (concatenation, formatting, method calls)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from functools import update_wrapper
from types import BuiltinMethodType, FunctionType, MethodType
from typing import Any

from jinja2 import (
    BaseLoader,
    BytecodeCache,
    Environment,
    StrictUndefined,
    TemplateNotFound,
    nodes,
)
from jinja2.bccache import Bucket
from jinja2.compiler import CodeGenerator, Frame
from jinja2.environment import TemplateModule
from jinja2.runtime import Context, Macro
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
    SecurityError,
)
from markupsafe import Markup

from balancewatch.core.limits import format_size
from balancewatch.core.money import Money
from balancewatch.render.filters import BOUNDED_FILTERS, FILTERS, lipsum
from balancewatch.render.i18n import TRANSLATORS, Catalogs, install
from balancewatch.render.sizes import ValueTooLargeError, check_binop, check_format_spec, check_method_call


class _MemoryLoader(BaseLoader):
    """The loaded files only; each template's filename is its relative path, so an error
    raised while rendering carries the file and line it came from."""

    def __init__(self, files: Mapping[str, str]) -> None:
        self.files = dict(files)

    def get_source(self, environment: Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        if template not in self.files:
            raise TemplateNotFound(template)
        return self.files[template], template, lambda: True

    def list_templates(self) -> list[str]:
        return sorted(self.files)


class _CompiledCache(BytecodeCache):
    """Compiled template code kept in memory, keyed by file name and source checksum.

    Every reload and every ``check`` compiles the whole directory to find syntax
    errors; with this cache an unchanged file is compiled once per process. Safe
    to share because every environment here is built with the same settings.
    """

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._store: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get_bucket(self, environment: Environment, name: str, filename: str | None, source: str) -> Bucket:
        # The key carries the checksum too, so two versions of one file (an edit
        # and its revert) are both kept.
        checksum = self.get_source_checksum(source)
        bucket = Bucket(environment, self.get_cache_key(name, filename) + checksum, checksum)
        self.load_bytecode(bucket)
        return bucket

    def load_bytecode(self, bucket: Bucket) -> None:
        with self._lock:
            data = self._store.get(bucket.key)
        if data is not None:
            bucket.bytecode_from_string(data)  # resets itself if the checksum differs

    def dump_bytecode(self, bucket: Bucket) -> None:
        data = bucket.bytecode_to_string()
        with self._lock:
            self._store[bucket.key] = data
            self._store.move_to_end(bucket.key)
            while len(self._store) > self._limit:
                self._store.popitem(last=False)


# Every environment here is a _BoundedSandbox: compiled code calls its checks, so it is
# the same for all of them and can be shared.
_COMPILED = _CompiledCache()


class _CheckedConcat(CodeGenerator):
    """Compiles ``a ~ b`` to a concatenation whose result is checked against the size limit:
    doubling a string in a loop must stop at the limit, not at the memory's end."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # noqa: N802  (Jinja's name)
        self.write("environment.checked_concat(")
        super().visit_Concat(node, frame)
        self.write(")")


class _BoundedFormatter(SandboxedFormatter):
    """``str.format`` in the sandbox, refusing field widths past the size limit."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        check_format_spec(format_spec, self._env.max_size)  # type: ignore[attr-defined]
        return super().format_field(value, format_spec)


class _BoundedEscapeFormatter(_BoundedFormatter, SandboxedEscapeFormatter):
    """``Markup.format``: escaping, and the same width check."""


_METHOD_TYPES = frozenset({BuiltinMethodType, MethodType})  # "x".ljust, and Markup's methods
_DICT_ATTRIBUTES = frozenset(dir(dict))  # d.items is the method, whatever d["items"] holds
_MONEY_FIELDS = frozenset({"minor", "currency"})
_TEXT_TYPES = frozenset({str, Markup})


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with every step that could make a huge value in one C call
    (which the watchdog cannot interrupt) checked against ``max_size`` before it runs:
    ``*``, ``**``, ``%`` and ``+``, ``~``, str/bytes/list method calls and ``str.format``."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _CheckedConcat

    def __init__(self, *args: Any, max_size: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_size = max_size
        self.translators: frozenset[Callable[..., Any]] = frozenset()  # ``install``'s gettext functions

    def getattr(self, obj: Any, attribute: str) -> Any:
        # ``a.b`` on the context's dicts and amounts and an imported template's text (a layout's
        # ``theme.brand``) is nearly every attribute a template reads; Jinja's path raises and
        # catches an AttributeError for each key of a dict, and checks every text for unsafe
        # attributes. These give what that path gives: a key of a plain dict that no dict
        # attribute shadows, the fields of Money, and text a template module exports under a
        # public name; everything else takes Jinja's path, checks included.
        kind = type(obj)
        if kind is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
        elif kind is Money and attribute in _MONEY_FIELDS:
            return getattr(obj, attribute)
        elif kind is TemplateModule and not attribute.startswith("_"):
            value = getattr(obj, attribute, None)
            if type(value) in _TEXT_TYPES:
                return value
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right, self.max_size)
        return self.binop_table[operator](left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        # Most calls are of the templates' own macros: safe, and taking no context, so called
        # as ``Context.call`` would call them without its checks for either (about a tenth of
        # rendering an alert went to those).
        if type(obj) is Macro:
            kwargs.pop("_block_vars", None)
            kwargs.pop("_loop_vars", None)
            try:
                return obj(*args, **kwargs)
            except StopIteration:  # as Context.call answers it
                return self.undefined(
                    "value was undefined because a callable raised a StopIteration exception"
                )
        if type(obj) is FunctionType and obj in self.translators:  # ``_("...")``: dozens an email
            return _with_context(context, obj, args, kwargs)
        if (args or kwargs) and type(obj) in _METHOD_TYPES:
            args = check_method_call(obj, args, kwargs, self.max_size)
        if not self.is_safe_callable(obj):
            raise SecurityError(f"{obj!r} is not safely callable")  # as Jinja's own call() does
        return context.call(obj, *args, **kwargs)

    def checked_concat(self, value: str) -> str:
        if len(value) > self.max_size:
            raise ValueTooLargeError(
                f"joining text with ~ made {len(value):,} characters; stopped: a template value may be "
                f"at most {format_size(self.max_size)} (render.max_size)"
            )
        return value

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # Jinja's own, with the formatters above: its formatter classes cannot be swapped in.
        # Called for every attribute a template reads: the type test first keeps that cheap.
        if type(value) not in _METHOD_TYPES or value.__name__ not in ("format", "format_map"):
            return None
        owner = value.__self__
        if not isinstance(owner, str):
            return None
        formatter: _BoundedFormatter
        if isinstance(owner, Markup):
            formatter = _BoundedEscapeFormatter(self, escape=owner.escape)
        else:
            formatter = _BoundedFormatter(self)
        is_map, str_type = value.__name__ == "format_map", type(owner)

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument and no keywords")
                return str_type(formatter.vformat(owner, (), args[0]))
            return str_type(formatter.vformat(owner, args, kwargs))

        return update_wrapper(wrapper, value)


def _with_context(context: Context, function: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
    """``function`` (``pass_context``) called as ``Context.call`` calls one: with the context,
    and the loop's and block's variables in it."""
    loop_vars, block_vars = kwargs.pop("_loop_vars", None), kwargs.pop("_block_vars", None)
    if loop_vars:
        context = context.derived(loop_vars)
    if block_vars:
        context = context.derived(block_vars)
    return function(context, *args, **kwargs)


def environment(files: Mapping[str, str], max_size: int, catalogs: Catalogs | None = None) -> _BoundedSandbox:
    """The sandbox ``files`` render in, translating into each context's ``locale`` with ``catalogs``."""
    env = _BoundedSandbox(
        loader=_MemoryLoader(files),
        extensions=["jinja2.ext.i18n"],
        bytecode_cache=_COMPILED,
        autoescape=lambda name: bool(name and name.endswith((".html", ".htm"))),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
        max_size=max_size,
    )
    env.filters.update(FILTERS)
    env.filters.update(BOUNDED_FILTERS)
    env.globals["lipsum"] = lipsum
    install(env, catalogs or Catalogs())
    env.translators = frozenset(function for name in TRANSLATORS if callable(function := env.globals[name]))
    return env
