// tests/interop/ts_client.mjs - Portcullis interop scenario through the official TS SDK v1
// (@modelcontextprotocol/sdk@1.32.2, installed by scripts/lib.sh).
// Usage: node ts_client.mjs URL [--sse]
//   default: StreamableHTTPClientTransport on URL (the /mcp endpoint)
//   --sse:   SSEClientTransport on URL (the legacy /sse endpoint)
// Env: PC_NPM_DIR (dir whose node_modules holds the SDK; default: the "clients" dir of the test
//      cache, ${PORTCULLIS_TEST_CACHE:-~/.cache/portcullis-test}/clients, filled by scripts/interop.sh),
//      MCP_TOKEN (optional, sent as "Authorization: Bearer ...").
// Steps (each printed as "ok <step>" or "FAIL <step>: reason"): initialize, tools/list (has echo),
// tools/call echo, resources/list + resources/read, prompts/list + prompts/get, ping,
// session DELETE (Streamable HTTP only), close. Exit 1 if any step failed.
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { join } from 'node:path';

const npmDir = process.env.PC_NPM_DIR
  || join(process.env.PORTCULLIS_TEST_CACHE || join(homedir(), '.cache', 'portcullis-test'), 'clients');
const req = createRequire(join(npmDir, 'package.json'));
let sdk;
try {
  sdk = {
    ...req('@modelcontextprotocol/sdk/client/index.js'),
    ...req('@modelcontextprotocol/sdk/client/streamableHttp.js'),
    ...req('@modelcontextprotocol/sdk/client/sse.js'),
  };
} catch (e) {
  console.log(`FAIL setup: cannot load @modelcontextprotocol/sdk from ${npmDir} (run scripts/interop.sh once or set PC_NPM_DIR): ${e.message.split('\n')[0]}`);
  process.exit(1);
}
const { Client, StreamableHTTPClientTransport, SSEClientTransport } = sdk;

const args = process.argv.slice(2);
const sse = args.includes('--sse');
const url = args.find((a) => !a.startsWith('--'));
if (!url) {
  console.error('usage: node ts_client.mjs URL [--sse]');
  process.exit(2);
}
const headers = process.env.MCP_TOKEN ? { Authorization: `Bearer ${process.env.MCP_TOKEN}` } : {};
const seen = []; // [method, status] of every HTTP exchange
const fetchLog = async (u, init) => {
  const r = await fetch(u, init);
  seen.push([init?.method ?? 'GET', r.status]);
  return r;
};

let failed = 0;
const STEP_TIMEOUT_MS = 20000;
async function step(name, fn) {
  let timer;
  const timeout = new Promise((_, rej) => {
    timer = setTimeout(() => rej(new Error(`timeout ${STEP_TIMEOUT_MS / 1000}s`)), STEP_TIMEOUT_MS);
  });
  try {
    const note = await Promise.race([fn(), timeout]);
    console.log(`ok ${name}${note ? ` - ${note}` : ''}`);
    return true;
  } catch (e) {
    failed++;
    const cause = e?.cause?.message ?? e?.cause?.code;
    const msg = `${e?.message ?? e}${cause && !String(e?.message).includes(cause) ? ` (${cause})` : ''}`;
    console.log(`FAIL ${name}: ${msg.split('\n').join(' | ').slice(0, 300)}`);
    return false;
  } finally {
    clearTimeout(timer);
  }
}
const check = (cond, msg) => { if (!cond) throw new Error(msg); };
const textOf = (content) => (content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('');

const opts = { requestInit: { headers }, fetch: fetchLog };
const transport = sse
  ? new SSEClientTransport(new URL(url), opts)
  : new StreamableHTTPClientTransport(new URL(url), opts);
const client = new Client({ name: 'portcullis-interop-ts', version: '1.0.0' });

const connected = await step('initialize', async () => {
  await client.connect(transport);
  const v = client.getServerVersion();
  const proto = sse ? '(sse)' : transport.protocolVersion;
  return `${v?.name} ${v?.version}, protocol ${proto}, session ${sse ? 'n/a' : transport.sessionId ?? 'none'}`;
});

if (connected) {
  await step('tools/list', async () => {
    const { tools } = await client.listTools();
    check(tools.some((t) => t.name === 'echo'), `no tool named echo among ${tools.length} tools`);
    return `${tools.length} tools, echo present`;
  });
  await step('tools/call echo', async () => {
    const r = await client.callTool({ name: 'echo', arguments: { message: 'hello portcullis' } });
    check(r.isError !== true, `isError: ${textOf(r.content).slice(0, 200)}`);
    const text = textOf(r.content);
    check(text.includes('hello portcullis'), `result text lacks "hello portcullis": ${JSON.stringify(text).slice(0, 200)}`);
    return JSON.stringify(text).slice(0, 80);
  });

  let resources = [];
  await step('resources/list', async () => {
    resources = (await client.listResources()).resources;
    check(resources.length > 0, 'no resources');
    return `${resources.length} resources`;
  });
  if (resources.length) {
    await step('resources/read', async () => {
      const r = await client.readResource({ uri: resources[0].uri });
      check(r.contents?.length > 0, `empty contents for ${resources[0].uri}`);
      return `${resources[0].uri} -> ${r.contents.length} content(s)`;
    });
  } else {
    failed++;
    console.log('FAIL resources/read: no resource to read');
  }

  let prompts = [];
  await step('prompts/list', async () => {
    prompts = (await client.listPrompts()).prompts;
    check(prompts.length > 0, 'no prompts');
    return `${prompts.length} prompts`;
  });
  if (prompts.length) {
    await step('prompts/get', async () => {
      const p = prompts[0];
      const a = Object.fromEntries((p.arguments ?? []).filter((x) => x.required).map((x) => [x.name, 'test']));
      const r = await client.getPrompt({ name: p.name, arguments: a });
      check(r.messages?.length > 0, `no messages for prompt ${p.name}`);
      return `${p.name}(${Object.keys(a).join(', ')}) -> ${r.messages.length} message(s)`;
    });
  } else {
    failed++;
    console.log('FAIL prompts/get: no prompt to get');
  }

  await step('ping', async () => { await client.ping(); });

  if (!sse) {
    await step('session DELETE', async () => {
      check(transport.sessionId, 'server issued no Mcp-Session-Id');
      await transport.terminateSession();
      const dels = seen.filter(([m]) => m === 'DELETE').map(([, s]) => s);
      check(dels.length > 0, 'no DELETE was sent');
      check(dels.every((s) => s >= 200 && s < 300), `DELETE answered HTTP ${dels.join(',')} (want 2xx)`);
      return `HTTP ${dels.join(',')}`;
    });
  }
}

await step('close', async () => { await client.close(); });
process.exit(failed ? 1 : 0);
