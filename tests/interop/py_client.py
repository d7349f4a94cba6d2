# tests/interop/py_client.py - Portcullis interop scenario through the official Python MCP SDK.
# Usage: python py_client.py MODE TARGET
#   http  TARGET=URL of /mcp  - mcp 1.x ClientSession over streamable_http_client (terminate_on_close)
#   sse   TARGET=URL of /sse  - mcp 1.x ClientSession over sse_client (legacy HTTP+SSE)
#   auto  TARGET=URL of /mcp  - mcp 2.x mcp.Client(streamable_http_client(...), mode="auto")
#   stdio TARGET=command line - spawned via StdioServerParameters; checks the server exits on close
# Run http/sse/stdio with the mcp==1.30.0 venv and auto with the mcp==2.3.0 venv (under mcp 2.x,
# http/sse/stdio also work, through mcp.Client(..., mode="legacy")).
# Env: MCP_TOKEN (optional, sent as "Authorization: Bearer ..." for http/sse/auto).
# Steps (each printed as "ok <step>" or "FAIL <step>: reason"): initialize, tools/list (has echo),
# tools/call echo, resources/list + resources/read, prompts/list + prompts/get, ping,
# session DELETE (http/auto) or server exit (stdio), close. Exit 1 if any step failed.
import logging
import os
import shlex
import sys
import tempfile
from contextlib import AsyncExitStack
from importlib.metadata import version

import anyio

STEP_TIMEOUT = 20  # seconds per step
MCP_VERSION = version("mcp")
V2 = MCP_VERSION.startswith("2.")
MODES = ("http", "sse", "auto", "stdio")

if len(sys.argv) != 3 or sys.argv[1] not in MODES:
    print(f"usage: python {sys.argv[0]} {{{'|'.join(MODES)}}} TARGET", file=sys.stderr)
    sys.exit(2)
MODE, TARGET = sys.argv[1], sys.argv[2]
if MODE == "auto" and not V2:
    print(f"mode auto needs mcp 2.x (mcp.Client(mode='auto')); this interpreter has mcp {MCP_VERSION}", file=sys.stderr)
    sys.exit(2)

HEADERS = {"Authorization": f"Bearer {os.environ['MCP_TOKEN']}"} if os.environ.get("MCP_TOKEN") else None
seen = []  # (method, status) of every HTTP exchange on the Streamable HTTP client
failed = 0


class SdkLog(logging.Handler):
    """Keeps the SDK's last warning/error: some transport failures only surface there."""

    last = None

    def emit(self, record):
        msg = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            msg += f": {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        SdkLog.last = " | ".join(msg.splitlines())[:200]


logging.getLogger("mcp").addHandler(SdkLog(logging.WARNING))
logging.getLogger("mcp").propagate = False


def attr(obj, *names, default=None):
    """Field by its mcp 2.x (snake_case) or mcp 1.x (camelCase) name."""
    for n in names:
        v = getattr(obj, n, None)
        if v is not None:
            return v
    return default


def report(name, note=None, error=None):
    global failed
    if error is not None:
        failed += 1
        while getattr(error, "exceptions", None):  # unwrap (Base)ExceptionGroup
            error = error.exceptions[0]
        msg = " | ".join(str(error).splitlines())[:300]
        if SdkLog.last and (isinstance(error, anyio.get_cancelled_exc_class()) or not msg):
            msg += f" (SDK log: {SdkLog.last})"
        print(f"FAIL {name}: {type(error).__name__}: {msg}" if not isinstance(error, AssertionError)
              else f"FAIL {name}: {msg}", flush=True)
    else:
        print(f"ok {name}{' - ' + note if note else ''}", flush=True)


async def step(name, fn):
    try:
        with anyio.fail_after(STEP_TIMEOUT):
            report(name, await fn())
        return True
    except Exception as e:  # noqa: BLE001 - any error is a failed step
        report(name, error=e)
        return False


def text_of(blocks):
    return "".join(getattr(b, "text", "") for b in blocks or [] if getattr(b, "type", None) == "text")


async def scenario(c, modern):
    """c: mcp 1.x ClientSession or mcp 2.x Client (same method names)."""

    async def list_tools():
        tools = (await c.list_tools()).tools
        assert any(t.name == "echo" for t in tools), f"no tool named echo among {len(tools)} tools"
        return f"{len(tools)} tools, echo present"

    async def call_echo():
        r = await c.call_tool("echo", {"message": "hello portcullis"})
        text = text_of(r.content)
        assert attr(r, "is_error", "isError") is not True, f"isError: {text[:200]}"
        assert "hello portcullis" in text, f"result text lacks 'hello portcullis': {text[:200]!r}"
        return repr(text)[:80]

    await step("tools/list", list_tools)
    await step("tools/call echo", call_echo)

    resources = []

    async def list_resources():
        resources.extend((await c.list_resources()).resources)
        assert resources, "no resources"
        return f"{len(resources)} resources"

    async def read_resource():
        uri = resources[0].uri
        r = await c.read_resource(uri)
        assert r.contents, f"empty contents for {uri}"
        return f"{uri} -> {len(r.contents)} content(s)"

    if await step("resources/list", list_resources):
        await step("resources/read", read_resource)
    else:
        report("resources/read", error=AssertionError("no resource to read"))

    prompts = []

    async def list_prompts():
        prompts.extend((await c.list_prompts()).prompts)
        assert prompts, "no prompts"
        return f"{len(prompts)} prompts"

    async def get_prompt():
        p = prompts[0]
        args = {a.name: "test" for a in (p.arguments or []) if a.required}
        r = await c.get_prompt(p.name, args)
        assert r.messages, f"no messages for prompt {p.name}"
        return f"{p.name}({', '.join(args)}) -> {len(r.messages)} message(s)"

    if await step("prompts/list", list_prompts):
        await step("prompts/get", get_prompt)
    else:
        report("prompts/get", error=AssertionError("no prompt to get"))

    async def ping():
        if modern:
            return "skipped: ping is removed in the 2026-07-28 protocol"
        await (c.session if V2 else c).send_ping()

    await step("ping", ping)


def http_client():
    from mcp.shared._httpx_utils import create_mcp_http_client  # httpx (1.x) or httpx2 (2.x)

    async def record(resp):
        seen.append((resp.request.method, resp.status_code))

    client = create_mcp_http_client(headers=HEADERS)
    client.event_hooks["response"].append(record)
    return client


def stdio_params():
    from mcp import StdioServerParameters

    argv = shlex.split(TARGET)
    if not argv:
        raise ValueError("stdio mode needs a command line as TARGET")
    return StdioServerParameters(command=argv[0], args=argv[1:])


class StdioWatch:
    """Captures the spawned server process and whether the SDK had to terminate it on close."""

    def __init__(self):
        self.process = None
        self.forced = False

    def install(self):
        import mcp.client.stdio as st

        create, terminate = getattr(st, "_create_platform_compatible_process", None), getattr(st, "_terminate_process_tree", None)
        if create is None or terminate is None:
            return  # SDK internals changed: "server exit" then reports that it cannot observe the process

        async def create_hook(*a, **kw):
            self.process = await create(*a, **kw)
            return self.process

        async def terminate_hook(*a, **kw):
            self.forced = True
            return await terminate(*a, **kw)

        st._create_platform_compatible_process, st._terminate_process_tree = create_hook, terminate_hook


async def open_session(stack, errlog, watch):
    """Enters transport + session; returns (client, note, modern)."""
    if V2:
        from mcp import Client

        if MODE in ("http", "auto"):
            from mcp.client.streamable_http import streamable_http_client

            http = await stack.enter_async_context(http_client())
            transport = streamable_http_client(TARGET, http_client=http, terminate_on_close=True)
        elif MODE == "sse":
            from mcp.client.sse import sse_client

            transport = sse_client(TARGET, headers=HEADERS)
        else:
            from mcp.client.stdio import stdio_client

            watch.install()
            transport = stdio_client(stdio_params(), errlog=errlog)
        c = await stack.enter_async_context(
            Client(transport, mode="auto" if MODE == "auto" else "legacy", read_timeout_seconds=STEP_TIMEOUT))
        pv, i = c.protocol_version, c.server_info
        note = f"{i.name if i else '?'} {i.version if i else ''}, mcp {MCP_VERSION} mode {'auto' if MODE == 'auto' else 'legacy'}, protocol {pv}"
        return c, note, pv >= "2026-07-28"

    from datetime import timedelta

    from mcp import ClientSession

    sid = None
    if MODE == "http":
        from mcp.client.streamable_http import streamable_http_client

        http = await stack.enter_async_context(http_client())
        r, w, sid = await stack.enter_async_context(streamable_http_client(TARGET, http_client=http, terminate_on_close=True))
    elif MODE == "sse":
        from mcp.client.sse import sse_client

        r, w = await stack.enter_async_context(sse_client(TARGET, headers=HEADERS))
    else:
        from mcp.client.stdio import stdio_client

        watch.install()
        r, w = await stack.enter_async_context(stdio_client(stdio_params(), errlog=errlog))
    s = await stack.enter_async_context(ClientSession(r, w, read_timeout_seconds=timedelta(seconds=STEP_TIMEOUT)))
    init = await s.initialize()
    i = init.serverInfo
    note = f"{i.name} {i.version}, mcp {MCP_VERSION}, protocol {init.protocolVersion}"
    if sid is not None:
        note += f", session {sid()}"
    return s, note, False


async def main(errlog, watch):
    stack = AsyncExitStack()
    phase = "initialize"
    modern = False
    try:
        c, note, modern = await open_session(stack, errlog, watch)
        report("initialize", note)
        phase = "steps"
        await scenario(c, modern)
        phase = "close"
        # No fail_after here: the stack holds task groups entered outside it (anyio needs nested
        # cancel scopes). The transports bound this themselves (HTTP timeouts, stdio 2 s + kill).
        await stack.aclose()
    except BaseException as e:  # noqa: BLE001 - transport/handshake errors, incl. exception groups
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        if phase != "close":
            try:
                await stack.aclose()
            except BaseException as e2:  # noqa: BLE001 - the transport's own error is the better one
                if isinstance(e, anyio.get_cancelled_exc_class()):
                    e = e2
        report({"initialize": "initialize", "steps": "scenario"}.get(phase, "close"), error=e)
        return

    # After close: what the transport did on the way out.
    if MODE in ("http", "auto"):
        dels = [st for m, st in seen if m == "DELETE"]
        if modern:
            report("session DELETE", "skipped: no session in the 2026-07-28 protocol")
        elif not dels:
            report("session DELETE", error=AssertionError("no DELETE was sent (server issued no Mcp-Session-Id?)"))
        elif any(not 200 <= st < 300 for st in dels):
            report("session DELETE", error=AssertionError(f"DELETE answered HTTP {','.join(map(str, dels))} (want 2xx)"))
        else:
            report("session DELETE", f"HTTP {','.join(map(str, dels))}")
    if MODE == "stdio":
        p = watch.process
        if p is None:
            report("server exit", error=AssertionError("could not observe the server process (SDK internals changed?)"))
        elif watch.forced:
            report("server exit", error=AssertionError(
                f"server did not exit after stdin closed; the SDK had to terminate it (returncode {p.returncode})"))
        elif p.returncode is None:
            report("server exit", error=AssertionError("server process still running after close"))
        else:
            report("server exit", f"exited by itself after stdin closed, code {p.returncode}")
    report("close")


with tempfile.TemporaryFile(mode="w+") as errlog:  # stdio server's stderr, shown on failure
    watch = StdioWatch()
    try:
        anyio.run(main, errlog, watch)
    except BaseException as e:  # noqa: BLE001 - anything escaping is a failure
        if isinstance(e, KeyboardInterrupt):
            raise
        report("run", error=e)
    if MODE == "stdio" and failed:
        errlog.seek(0)
        tail = errlog.read().splitlines()[-15:]
        if tail:
            print("server stderr (last lines):", *("  " + line for line in tail), sep="\n")
sys.exit(1 if failed else 0)
