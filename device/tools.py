"""Device tools the model may call: a registry, their declarations, and running a call.

Adding a tool is one function in this file: typed parameters after the first
(`device`, which is not shown to the model), a docstring the model reads, a
dict it gets back, and `@DEVICE_TOOLS.tool` above it. Parameters may carry
bounds and a description with `Annotated[int, Field(ge=0, le=100, description=...)]`:
they become the declaration's schema, and the model's arguments are checked
against them before the function runs.

Importing this module does not import the Live SDK (the configuration checks the
tool names with it). A call runs in a thread of its own so that reading /proc or waiting on the
appliance never blocks the event loop; a thread cannot be
interrupted, so tools must be quick: the timeout answers the model, it does not
stop the function. Tools that hang would pile up threads call after call, so at
most TOOL_THREADS_LIMIT may be running; beyond that the model is told the device
is busy and nothing runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import json
import logging
import threading
import time
import typing
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar

from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from device.config import ToolsConfig
from device.errors import TEXT_LIMIT, ConfigError, cut, one_line, quoted
from device.logs import Overflow
from device.workers import in_own_thread

if TYPE_CHECKING:
    from google.genai import types

log = logging.getLogger(__name__)
T = TypeVar("T")

UNKNOWN = "unknown"
#: What a call's task is cancelled with when the service withdraws it
#: (toolCallCancellation); any other cancellation is its session ending.
WITHDRAWN = "withdrawn by the service"
#: Tool threads that may be running at once, a hung one included until it returns.
TOOL_THREADS_LIMIT = 4
#: The most bytes of JSON a tool's result may have; a larger one is answered with an
#: error. About 16k tokens of the model's context: more it cannot use in a spoken reply,
#: and megabytes held the person's speech behind them on the link.
RESULT_LIMIT = 64 * 1024

#: Calls one message of answers not run ("busy", "not run") answers at most; more in one
#: go are not answered at all: 20,000 calls in a message of 750 KB were answered in
#: 2.5 MB, ahead of the person's speech.
BUSY_ANSWERS_LIMIT = 16
#: Volume changes the model may make in any minute: each is written to the SD card before
#: it is answered, and a service calling set_volume in a loop wrote the card twice a call
#: for as long as it went on. A person asks for a few a minute at the most.
VOLUME_CHANGES_PER_MINUTE = 12
#: Characters of a call's name or id a journal line quotes: a tool's name is a word or two.
NAME_LIMIT = 100
#: No box ran this code before this day: a clock that reads earlier has not been set
#: (a Pi has no clock of its own: it starts at 1970, or at its last shutdown, and NTP
#: sets it once the network is up).
CLOCK_SET_AFTER = date(2026, 1, 1)
#: systemd-timesyncd's directory, there from its start; it touches `synchronized` in it
#: once it has set the clock from the network. Until then the clock runs from the last
#: shutdown's time (fake-hwclock's, or timesyncd's own), behind by as long as the box
#: was off: a date after CLOCK_SET_AFTER, and still wrong.
TIMESYNC_DIR = "run/systemd/timesync"
#: What get_time adds to a time in UTC: the zone of images whose owner never set one
#: (Ubuntu's, Debian's when its installer's question was skipped), told as the local time
#: it was hours off for most people. London's zone is GMT or BST, never UTC.
UNSET_ZONE = (
    "the device's time zone is UTC, which may never have been set to where it is: say "
    "that this time is UTC, not necessarily the local time."
)
#: JSON schema types of a number, which a JSON true or false is not.
NUMBERS = ("integer", "number")


class DeviceActions(Protocol):
    """What tools may do to the appliance, which implements it.

    Tools run in a worker thread of their own: whatever touches the event loop's
    state must be handed to it with `loop.call_soon_threadsafe` (`end_conversation`);
    `set_volume` may block on writing the state file, `volume` only reads a number.
    """

    def volume(self) -> float:
        """The speaker volume, 0..1."""
        ...

    def set_volume(self, level: float) -> None:
        """Apply a speaker volume of 0..1 and keep it across restarts."""
        ...

    def end_conversation(self) -> None:
        """Hang up once the model's reply has been played."""
        ...


def local_now() -> datetime:
    """The time in the device's own time zone, as it is set now: glibc reads the zone
    (/etc/localtime, or TZ) once, and a zone the owner set while the service ran (`sudo
    timedatectl set-timezone`) was never told until a restart. tzset() reads it again
    when it has changed (a stat otherwise)."""
    time.tzset()
    return datetime.now().astimezone()


class Allowance:
    """At most `uses` in any `seconds`: a bound on how often the service can make the box
    do something that costs it (a write to the SD card). Taken from tool threads."""

    def __init__(self, uses: int, seconds: float = 60.0) -> None:
        self._uses = uses
        self._seconds = seconds
        self._taken: deque[float] = deque()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """One use now, if the last `seconds` leave room for it."""
        now = time.monotonic()
        with self._lock:
            while self._taken and now - self._taken[0] >= self._seconds:
                self._taken.popleft()
            if len(self._taken) >= self._uses:
                return False
            self._taken.append(now)
            return True


@dataclass(frozen=True)
class Device:
    """What a tool function gets as its first argument."""

    actions: DeviceActions
    #: Where /proc and /sys are (tests point it at a fake tree).
    root: Path = Path("/")
    now: Callable[[], datetime] = local_now
    volume_changes: Allowance = field(
        default_factory=lambda: Allowance(VOLUME_CHANGES_PER_MINUTE)
    )

    def read(self, path: str) -> str | None:
        """A small kernel file's text, or None when this machine does not have it."""
        try:
            return (self.root / path.lstrip("/")).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            return None

    def clock_unchecked(self) -> bool:
        """Whether timesyncd has not set the clock from the network since the start; False
        where another time service keeps it (chrony, ntpd: they leave no such mark)."""
        timesync = self.root / TIMESYNC_DIR
        return timesync.is_dir() and not (timesync / "synchronized").exists()


@dataclass(frozen=True)
class Parameter:
    """One parameter the model fills in: its type (schema and checks) and default."""

    adapter: TypeAdapter[Any]
    required: bool
    default: Any = None

    def check(self, value: Any) -> Any:
        """The model's value checked and converted. A JSON true or false is no number,
        though pydantic's lax mode (which takes the model's 25.0 for 25) reads it as 1
        or 0: `set_volume(percent=true)` would set 1 %."""
        if isinstance(value, bool) and self.adapter.json_schema().get("type") in NUMBERS:
            raise ValueError(f"Input should be a number, not {json.dumps(value)}")
        try:
            return self.adapter.validate_python(value)
        except ValidationError as exc:
            raise ValueError("; ".join(error["msg"] for error in exc.errors())) from None


@dataclass(frozen=True)
class DeviceTool:
    """One registered function, its declaration and its argument checks."""

    function: Callable[..., Any]
    parameters: dict[str, Parameter]

    @property
    def name(self) -> str:
        return self.function.__name__

    @classmethod
    def from_function(cls, function: Callable[..., Any]) -> DeviceTool:
        """Read the parameters after `device` from the signature; each needs a type. An
        `async def` tool is refused, one that yields too: its thread would get a coroutine
        (an async generator), never run, and the model be told at every call that the
        result is not JSON."""
        if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
            raise TypeError(
                f"tool {function.__name__}: write it as a plain def, not async def (a tool "
                "runs in a thread of its own)"
            )
        hints = typing.get_type_hints(function, include_extras=True)
        _, *params = inspect.signature(function).parameters.values()
        untyped = [p.name for p in params if p.name not in hints]
        if untyped:
            raise TypeError(f"tool {function.__name__}: give {untyped[0]!r} a type")
        return cls(function, {
            p.name: Parameter(
                TypeAdapter(hints[p.name]),
                required=p.default is inspect.Parameter.empty,
                default=None if p.default is inspect.Parameter.empty else p.default,
            )
            for p in params
        })

    def declaration(self) -> types.FunctionDeclaration:
        """Name, docstring and a schema of the parameters, as the Gemini API takes them."""
        from google.genai import types

        return types.FunctionDeclaration(
            name=self.name,
            description=inspect.getdoc(self.function) or "",
            parameters=self._schema() if self.parameters else None,
        )

    def _schema(self) -> types.Schema:
        from google.genai import types

        properties = {}
        for name, param in self.parameters.items():
            properties[name] = param.adapter.json_schema()
            if not param.required:
                properties[name]["default"] = param.default
        required = [name for name, param in self.parameters.items() if param.required]
        schema = {"type": "object", "properties": properties, "required": required or None}
        try:
            return types.Schema.from_json_schema(
                json_schema=types.JSONSchema.model_validate(schema), api_option="GEMINI_API"
            )
        except ValueError as exc:  # pydantic's ValidationError too
            raise TypeError(f"tool {self.name}: {_undeclarable(exc)}") from None

    def arguments(self, args: dict[str, Any]) -> dict[str, Any]:
        """The model's arguments checked and converted; ValueError says what is wrong."""
        unexpected = sorted(set(args) - set(self.parameters))
        if unexpected:
            raise ValueError(f"unexpected argument(s): {', '.join(unexpected)}")
        checked = {}
        for name, param in self.parameters.items():
            if name in args:
                try:
                    checked[name] = param.check(args[name])
                except ValueError as exc:
                    raise ValueError(f"argument {name}: {exc}") from None
            elif param.required:
                raise ValueError(f"missing argument: {name}")
        return checked


def _undeclarable(exc: ValueError) -> str:
    """Which parameter the Live API's schema cannot carry, in one line: pydantic's own
    error, four lines naming neither tool nor parameter, was the journal's at every
    setup (a tuple's prefixItems, say)."""
    if isinstance(exc, ValidationError) and exc.errors():
        error = exc.errors()[0]
        where = [str(part) for part in error["loc"]]
        if len(where) > 2 and where[0] == "properties":
            return (
                f"parameter {where[1]}: the Live API cannot declare its type "
                f"({'.'.join(where[2:])}: {error['msg']}); use int, float, str, bool, a "
                "Literal, an Enum, or a list of one of them"
            )
    return f"its parameters cannot be declared to the Live API: {one_line(str(exc))}"


class Registry:
    """Tools by name; `@registry.tool` adds one."""

    def __init__(self) -> None:
        self._tools: dict[str, DeviceTool] = {}

    def tool(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """Register `function` under its own name (a decorator; returns it unchanged)."""
        entry = DeviceTool.from_function(function)
        if entry.name in self._tools:
            raise ValueError(f"tool {entry.name} is registered twice")
        self._tools[entry.name] = entry
        return function

    def select(self, names: tuple[str, ...]) -> dict[str, DeviceTool]:
        """The tools named in `[tools] enabled`; ConfigError for a name nobody registered."""
        unknown = [name for name in names if name not in self._tools]
        if unknown:
            raise ConfigError(
                f"[tools] enabled: unknown tool {unknown[0]!r}; "
                f"known tools: {', '.join(self._tools)}"
            )
        return {name: self._tools[name] for name in names}


DEVICE_TOOLS = Registry()


def declarations(cfg: ToolsConfig, registry: Registry = DEVICE_TOOLS) -> list[types.Tool]:
    """The setup's tools: the enabled functions, and Google Search when it is on."""
    from google.genai import types

    tools = []
    if cfg.enabled:
        functions = [tool.declaration() for tool in registry.select(cfg.enabled).values()]
        tools.append(types.Tool(function_declarations=functions))
    if cfg.google_search:
        tools.append(types.Tool(google_search=types.GoogleSearch()))
    return tools


class ToolBox:
    """Runs the model's function calls against the enabled tools."""

    def __init__(
        self,
        cfg: ToolsConfig,
        actions: DeviceActions,
        *,
        registry: Registry = DEVICE_TOOLS,
        root: Path = Path("/"),
        now: Callable[[], datetime] = local_now,
    ) -> None:
        self._cfg = cfg
        self._registry = registry
        self._tools = registry.select(cfg.enabled)
        self._device = Device(actions, root, now)
        self._threads: set[threading.Thread] = set()  # abandoned ones too, until they end
        self._busy = Overflow(log, "tool_threads")

    def declarations(self) -> list[types.Tool]:
        """What the setup declares (see `declarations`)."""
        return declarations(self._cfg, self._registry)

    async def run(self, call: types.FunctionCall) -> types.FunctionResponse:
        """Answer one call: the tool's result, or {"error": ...}; never raises but cancellation.

        Cancelling the awaiting task (the server's toolCallCancellation) raises
        CancelledError here, so nothing is answered; the worker thread finishes alone.
        """
        name = call.name or ""
        started = time.monotonic()
        try:
            response = await self._call(name, call.args or {})
        except asyncio.CancelledError as exc:
            self._log(call, started, "cancelled" if exc.args == (WITHDRAWN,) else "ended")
            raise
        error = response.get("error")
        self._log(call, started, "error" if error else "ok", str(error or ""))
        return answer(call, response)

    async def _call(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        tool = self._tools.get(name)
        if tool is None:
            return {"error": f"no tool named {call_name(name)!r} on this device"}
        try:
            kwargs = tool.arguments(args)
        except ValueError as exc:  # it may name every argument the service made up
            return {"error": cut(f"bad arguments: {exc}", TEXT_LIMIT)}
        self._threads = {thread for thread in self._threads if thread.is_alive()}
        if len(self._threads) >= TOOL_THREADS_LIMIT:
            running = len(self._threads)
            self._busy.hit("tool %s not run: %d earlier calls are still running", name, running)
            # Siblings of this call in the same message count too: "earlier" misled.
            return {"error": f"the device is busy: {running} other tool calls are still "
                    f"running (at most {TOOL_THREADS_LIMIT} at once), so this one was not "
                    "run; call it again once they have answered"}
        self._busy.ended()
        call = functools.partial(_answer_of, tool.function, self._device, kwargs)
        deadline = asyncio.timeout(self._cfg.timeout_s)
        try:
            async with deadline:
                result = await in_own_thread(call, "tool", self._threads)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            # SystemExit too (argparse's sys.exit(2) in a helper the tool runs): raised into
            # the session's task, asyncio ended the daemon with it, exit 2 never restarted.
            if deadline.expired():
                return {"error": f"timed out after {self._cfg.timeout_s:g} s"}
            return {"error": _failure(exc)}
        return result

    def _log(self, call: types.FunctionCall, started: float, result: str, error: str = "") -> None:
        """One journal line per call: LIVE_TOOL, LIVE_TOOL_CALL (its id), LIVE_TOOL_RESULT
        (ok, error, cancelled: the service withdrew it, or ended: its session ended
        first, by a drop, a hang-up or a stop) and LIVE_TOOL_MS."""
        ms = round((time.monotonic() - started) * 1000)
        log.log(
            logging.WARNING if result == "error" else logging.INFO,
            "tool %s: %s (%d ms)",
            call_name(call.name),
            one_line(error) or result,
            ms,
            extra={
                "LIVE_TOOL": call_name(call.name, none=""),
                "LIVE_TOOL_CALL": call_name(call.id, none=""),
                "LIVE_TOOL_RESULT": result,
                "LIVE_TOOL_MS": ms,
            },
        )


def _answer_of(
    function: Callable[..., Any], device: Device, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The tool's result made JSON, in the tool's thread, within its timeout: a generator
    (a tool that yields) runs its body only as it is made JSON, which on the event loop
    froze the box for as long as it took (for good, polling for ever); a large result
    takes time too. An iterator is taken only as far as RESULT_LIMIT could hold
    (`_taken`): an endless one (itertools.count(), a sensor's stream) grew a list in the
    abandoned thread until the service's memory limit killed the box. A dict is the answer
    itself, anything else its output: decided by what the tool returned, not by what
    `_taken` made of it (a dataclass's fields, as a dict, were the answer's own, a field
    named `error` a failure)."""
    result = function(device, **kwargs)
    taken = _taken(result, [RESULT_LIMIT + 1], set())
    return _as_json(taken if isinstance(result, dict) else {"output": taken})


def _taken(value: Any, room: list[int], within: set[int]) -> Any:
    """`value` with each iterator in it (itself, or one in what holds it, as `{"readings":
    stream()}`) made a list, and no more than `room[0]` items read or walked in all: each
    is a byte or more of JSON, so one past RESULT_LIMIT is answered too large whatever
    follows it. Only an iterator returned bare was bounded: one in a dict was read to its
    end, never for an endless one. So is every kind pydantic walks to make JSON, made
    plain with the same JSON: a dict's or tuple's of any kind (an OrderedDict, a
    namedtuple: made of its fields, not of an iterable), a set's, a deque's, a dataclass's
    (its fields) and a pydantic model's (its fields and extras, in a copy its own
    serializer still writes, with its aliases; as a plain dict, aliases lost, when it has
    computed fields, which its serializer would read afresh, or when the room ran out
    part way, where the copy would keep the fields after the cut as they were).
    `within`: the containers being walked, a cycle left for pydantic to name."""
    if isinstance(value, Iterator):
        return [_taken(item, room, within) for item in _while_room(value, room)]
    walked = dict | list | tuple | set | frozenset | deque | BaseModel
    if id(value) in within or not (isinstance(value, walked) or _a_dataclass(value)):
        return value
    within.add(id(value))
    try:
        if isinstance(value, BaseModel):
            computed = type(value).model_computed_fields
            fields = dict(value) | {name: getattr(value, name) for name in computed}
            taken = _taken(fields, room, within)  # dict(): its fields and extras
            if computed or room[0] <= 0:
                return taken
            return value.model_copy(update=taken)
        if _a_dataclass(value):
            fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
            return _taken(fields, room, within)
        if isinstance(value, dict):
            entries = _while_room(iter(value.items()), room)
            return {key: _taken(item, room, within) for key, item in entries}
        plain = tuple if isinstance(value, tuple) else list  # a set's JSON is a list too
        return plain(_taken(item, room, within) for item in _while_room(iter(value), room))
    finally:
        within.discard(id(value))


def _a_dataclass(value: Any) -> bool:
    """An instance of a dataclass (not the class itself, which pydantic writes as no JSON)."""
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _while_room(items: Iterator[T], room: list[int]) -> Iterator[T]:
    """The items while `room[0]` lasts, each taking one of it; none read past it."""
    while room[0] > 0:
        try:
            item = next(items)
        except StopIteration:
            return
        room[0] -= 1
        yield item


def _failure(exc: BaseException) -> str:
    """A tool's exception as the model is told it. One whose text cannot be made (an
    owner's __str__ that raises) is its type alone: raised here, it failed the
    connection's task group, the call unanswered and the reply in flight lost. A byte
    of a file's name that is not UTF-8 (a lone surrogate) is written as an escape: the
    service refuses text holding one."""
    try:
        text = str(exc).encode("utf-8", "backslashreplace").decode()
    except Exception:
        return type(exc).__name__
    return cut(f"{type(exc).__name__}: {text}", TEXT_LIMIT)


def _as_json(result: dict[str, Any]) -> dict[str, Any]:
    """A tool's result in the values JSON has (a path as text, a set as a list), or an
    error the model is told when it is not JSON (the SDK's send fails on a set or a path,
    ending the connection with the call unanswered, and sends NaN as JSON no parser takes,
    and a lone surrogate, a file name's byte that is not UTF-8, as an escape no Unicode
    text holds, which the service refuses) or is past RESULT_LIMIT (in UTF-8)."""
    try:
        plain = to_jsonable_python(result)
        size = len(json.dumps(plain, allow_nan=False, ensure_ascii=False).encode())
    except (PydanticSerializationError, ValueError) as exc:
        return {"error": cut(f"the tool's result is not JSON: {exc}", TEXT_LIMIT)}
    if size > RESULT_LIMIT:
        return {"error": f"the tool's result is too large ({size} bytes of JSON; at most "
                f"{RESULT_LIMIT}), so it was not sent"}
    return typing.cast(dict[str, Any], plain)


def call_name(text: str | None, none: str = "?") -> str:
    """A call's name (or id) as the service gave it, as a journal line quotes it: cut to
    NAME_LIMIT and on one printable line (a line break split the journal's line, an
    escape sequence acted on the terminal of `journalctl -f`); `none` when it gave none."""
    return quoted(text, NAME_LIMIT) if text else none


def answer(call: types.FunctionCall, response: dict[str, Any]) -> types.FunctionResponse:
    """The response to a call, with its id (the service matches them by id)."""
    from google.genai import types

    return types.FunctionResponse(id=call.id, name=call.name or "", response=response)


# ---- the device tools ------------------------------------------------------------------


@DEVICE_TOOLS.tool
def get_time(device: Device) -> dict[str, str]:
    """The local date, time, weekday and time zone of the place the device is in."""
    now = device.now()
    if now.date() < CLOCK_SET_AFTER:
        return {
            "error": f"the device's clock is not set yet (it reads {now:%Y-%m-%d}): it is "
            "set from the network soon after the device is online. Do not tell this date."
        }
    told = {
        "date": now.strftime("%Y-%m-%d"),
        "time": now.strftime("%H:%M"),
        "weekday": now.strftime("%A"),
        "timezone": now.strftime("%Z") or UNKNOWN,
        "utc_offset": now.strftime("%z") or UNKNOWN,
    }
    warnings = []
    if device.clock_unchecked():
        warnings.append(
            "the device's clock has not been set from the network since it started: it "
            "runs from when the device was last switched off, and may be behind by as long "
            "as it was off. Say that this time may be wrong."
        )
    if now.tzname() == "UTC":
        warnings.append(UNSET_ZONE)
    if warnings:
        told["warning"] = " ".join(warnings)
    return told


@DEVICE_TOOLS.tool
def device_status(device: Device) -> dict[str, Any]:
    """The device's own health: time since it started, CPU temperature, Wi-Fi signal, volume."""
    return {
        "uptime": _uptime(device.read("/proc/uptime")),
        "cpu_temperature_c": _temperature(device.read("/sys/class/thermal/thermal_zone0/temp")),
        "wifi_signal_dbm": _wifi_signal(device.read("/proc/net/wireless")),
        "volume_percent": round(device.actions.volume() * 100),
    }


@DEVICE_TOOLS.tool
def set_volume(
    device: Device,
    percent: Annotated[int, Field(ge=0, le=100, description="0 is silent, 100 is loudest")],
) -> dict[str, int | str]:
    """Set the speaker volume in percent. The device keeps it after a restart."""
    if not device.volume_changes.take():
        return {"error": f"the volume was changed too often (at most "
                f"{VOLUME_CHANGES_PER_MINUTE} times a minute): it stays as it is"}
    device.actions.set_volume(percent / 100)
    return {"volume_percent": percent}


@DEVICE_TOOLS.tool
def end_conversation(device: Device) -> dict[str, str]:
    """End the conversation, e.g. when the person says goodbye or wants to stop.

    The device hangs up after this reply, so say goodbye in it.
    """
    device.actions.end_conversation()
    return {"result": "the device hangs up after this reply"}


def _uptime(text: str | None) -> str:
    """/proc/uptime ("12345.67 23456.78") as '3 h 25 min' (days too when there are any)."""
    try:
        seconds = int(float(text.split()[0])) if text else None
    except (ValueError, IndexError):
        seconds = None
    if seconds is None:
        return UNKNOWN
    days, rest = divmod(seconds, 86400)
    hours, minutes = divmod(rest // 60, 60)
    if days:
        return f"{days} d {hours} h {minutes} min"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def _temperature(text: str | None) -> float | str:
    """The thermal zone's millidegrees Celsius as degrees, one decimal."""
    try:
        return round(int(text) / 1000, 1) if text else UNKNOWN
    except ValueError:
        return UNKNOWN


def _wifi_signal(text: str | None) -> int | str:
    """The signal level in dBm of the first interface that has one, from /proc/net/wireless.
    The kernel marks a level it measured with a "."; an interface connected to nothing (a
    Pi on Ethernet) is listed with zeros not so marked, which are no signal."""
    lines = text.splitlines()[2:] if text else []
    for line in lines:
        _, _, values = line.partition(":")
        fields = values.split()
        if len(fields) >= 3 and fields[2].endswith("."):
            try:
                return round(float(fields[2].rstrip(".")))
            except ValueError:
                return UNKNOWN
    return UNKNOWN
