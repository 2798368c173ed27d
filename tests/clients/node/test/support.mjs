// What every file of the Node client suite shares: where the servers are, clients loaded from
// proto/ with @grpc/proto-loader, promise-returning calls, and expectError, the one place that
// reads the error contract (google.rpc.Status from the grpc-status-details-bin trailer, its
// details decoded with protobufjs from google-proto-files' google/rpc protos).
//
// Run by tests/tests/clients_node.rs, which starts the servers and sets SESSION_ADDR,
// STORE_ADDR and ADMIN_TOKEN.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));

/** The project's .proto files. */
export const PROTO_DIR = path.resolve(here, '../../../../proto');

/** Every call's deadline in ms unless a test says otherwise: a hang fails, a slow machine does not. */
export const TIMEOUT_MS = 10_000;

/** ErrorInfo.domain of each server's errors. */
export const SESSION_DOMAIN = 'session.v1';
export const STORE_DOMAIN = 'store.v1';

export const Code = grpc.status;

/** The environment variable `name`, which the Rust side sets. */
export function env(name) {
  const value = process.env[name];
  if (value === undefined) {
    throw new Error(
      `${name} is not set: run this suite through \`cargo test -p tests --test clients_node\`, ` +
        'which starts the servers and sets it',
    );
  }
  return value;
}

const definition = protoLoader.loadSync(
  ['session/v1/cart.proto', 'session/v1/todo.proto', 'session/v1/admin.proto', 'store/v1/store.proto'],
  { includeDirs: [PROTO_DIR], keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true },
);
const loaded = grpc.loadPackageDefinition(definition);

// google.rpc.Status and its details, from the protos google-proto-files ships.
const GOOGLE_PROTOS = path.dirname(require.resolve('google-proto-files/package.json'));
const rpcRoot = new protobuf.Root();
rpcRoot.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : path.join(GOOGLE_PROTOS, target));
rpcRoot.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], { keepCase: true });
const RpcStatus = rpcRoot.lookupType('google.rpc.Status');
const DETAIL_TYPES = ['BadRequest', 'ErrorInfo', 'RetryInfo'];

let opened;

/** Clients of the servers under test, opened once per process; closed by close(). */
export function servers() {
  if (!opened) {
    const sessionAddr = env('SESSION_ADDR');
    const credentials = grpc.credentials.createInsecure();
    const v1 = loaded.session.v1;
    opened = {
      cart: new v1.CartService(sessionAddr, credentials),
      todo: new v1.TodoService(sessionAddr, credentials),
      admin: new v1.AdminService(sessionAddr, credentials),
      store: new loaded.store.v1.StoreService(env('STORE_ADDR'), credentials),
      adminToken: process.env.ADMIN_TOKEN ?? '',
    };
  }
  return opened;
}

/** Closes the clients, so that the process can exit. */
export function close() {
  if (opened) {
    for (const client of [opened.cart, opened.todo, opened.admin, opened.store]) client.close();
    opened = undefined;
  }
}

/**
 * Calls unary `method` of `client` with `request`; resolves to the reply, rejects with the
 * grpc-js ServiceError. `timeoutMs` null sends no deadline (grpc-js then never times out
 * itself, and the server's default deadline applies); `metadata` is [[key, value], ...].
 */
export function call(client, method, request, { timeoutMs = TIMEOUT_MS, metadata = [] } = {}) {
  const headers = new grpc.Metadata();
  for (const [key, value] of metadata) headers.set(key, value);
  const options = timeoutMs === null ? {} : { deadline: Date.now() + timeoutMs };
  return new Promise((resolve, reject) => {
    client[method](request, headers, options, (error, reply) => (error ? reject(error) : resolve(reply)));
  });
}

/**
 * Opens server stream `method`: returns { next(), cancel(), stream }, where next() resolves to
 * the next message, or to null once the stream ended with OK, and rejects with its error.
 */
export function watch(client, method, request, { timeoutMs = 60_000 } = {}) {
  const stream = client[method](request, { deadline: Date.now() + timeoutMs });
  stream.on('error', () => {}); // read through next(); a cancel() must not be "unhandled"
  const messages = stream[Symbol.asyncIterator]();
  return {
    stream,
    async next() {
      const { value, done } = await messages.next();
      return done ? null : value;
    },
    cancel() {
      stream.cancel();
    },
  };
}

/** Reads `watcher` until a message satisfies `done` (at most `limit` messages). */
export async function nextUntil(watcher, done, what, limit = 20) {
  for (let i = 0; i < limit; i += 1) {
    const message = await watcher.next();
    assert.notEqual(message, null, `the stream ended before ${what}`);
    if (done(message)) return message;
  }
  assert.fail(`${limit} messages on the stream and still not ${what}`);
}

/** A fresh request id: the README asks for one on every mutation, reused on a retry. */
export function requestId() {
  return `node-${randomUUID()}`;
}

/** An AddItemRequest with a fresh request id unless `rid` is given. */
export function addItem(key, sku, quantity, cents, { rid, currency = 'USD' } = {}) {
  return {
    key,
    sku,
    name: `product ${sku}`,
    quantity,
    unit_price: { currency_code: currency, minor_units: cents },
    request_id: rid ?? requestId(),
  };
}

export function quantityOf(session, sku) {
  return session.items.filter((item) => item.sku === sku).reduce((sum, item) => sum + item.quantity, 0);
}

/**
 * The google.rpc.Status of a failed call, decoded from its grpc-status-details-bin trailer
 * (null when there is none), and its details by type name (BadRequest, ErrorInfo, RetryInfo).
 */
export function detailsOf(error) {
  const [bin] = error.metadata?.get('grpc-status-details-bin') ?? [];
  if (!bin) return { status: null, details: {} };
  const status = RpcStatus.decode(bin);
  const details = {};
  for (const any of status.details) {
    const name = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
    const short = name.replace(/^google\.rpc\./, '');
    if (DETAIL_TYPES.includes(short)) {
      details[short] = rpcRoot.lookupType(name).toObject(rpcRoot.lookupType(name).decode(any.value), {
        longs: Number,
        defaults: true,
      });
    }
  }
  return { status, details };
}

const codeName = (code) => Object.keys(Code).find((name) => Code[name] === code) ?? String(code);

/**
 * Awaits `fn()`, which must fail with `code`, and checks what the error contract says comes
 * with it: `field`, a google.rpc.BadRequest naming it; `retryInfo`, a google.rpc.RetryInfo;
 * `message`, text the status message contains; and always a google.rpc.ErrorInfo with
 * `reason` and `domain` (default session.v1), with `metadata` among its metadata, checked
 * last so that every other expectation is checked first. Returns the error and its details.
 */
export async function expectError(fn, code, reason, { domain = SESSION_DOMAIN, field, retryInfo, metadata, message } = {}) {
  let error;
  try {
    const reply = await fn();
    assert.fail(`expected ${codeName(code)} (${reason}), got OK: ${JSON.stringify(reply)}`);
  } catch (caught) {
    if (caught instanceof assert.AssertionError) throw caught;
    error = caught;
  }
  const what = `${codeName(error.code)}: ${JSON.stringify(error.details)}`;
  assert.equal(error.code, code, `expected ${codeName(code)} (${reason}), got ${what}`);
  if (message !== undefined) assert.ok(error.details.includes(message), `${what} does not say ${message}`);
  const { status, details } = detailsOf(error);
  if (status) assert.equal(status.code, code, `grpc-status-details-bin of ${what}`);
  if (field !== undefined) {
    assert.ok(details.BadRequest, `no google.rpc.BadRequest in ${what}`);
    const fields = details.BadRequest.field_violations.map((violation) => violation.field);
    assert.ok(fields.includes(field), `BadRequest of ${what} names ${fields}, not ${field}`);
  }
  if (retryInfo) assert.ok(details.RetryInfo, `no google.rpc.RetryInfo in ${what}`);
  const info = details.ErrorInfo;
  assert.ok(info, `no google.rpc.ErrorInfo in ${what} (expected reason ${reason}, domain ${domain})`);
  assert.deepEqual([info.reason, info.domain], [reason, domain], `ErrorInfo of ${what}`);
  for (const [name, value] of Object.entries(metadata ?? {})) {
    assert.equal(info.metadata[name], value, `ErrorInfo.metadata[${name}] of ${what}`);
  }
  return { error, details };
}

// The deadline files' shared names (deadline-1-prepare, -2-server-deadline, -3-not-applied).
export const LATE_KEY = 'node-late';
export const LATE_REQUEST_ID = 'node-late-b';
