// Each code of the README's error table that a healthy stack can be made to answer, from Node,
// with the details decoded from the grpc-status-details-bin trailer. Run by
// tests/tests/clients_node.rs.
//
// INTERNAL is only for bugs (an actor's handler panicked): nothing sent from outside can cause
// it, so it is not provoked here.

import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { Code, STORE_DOMAIN, addItem, call, close, expectError, requestId, servers } from './support.mjs';

after(close);

const start = (key) => call(servers().cart, 'StartSession', { key });

test('INVALID_ARGUMENT names the field: a bad currency', async () => {
  const { cart } = servers();
  await start('node-bad-input');
  await expectError(
    () => call(cart, 'AddItem', addItem('node-bad-input', 'A', 1, 100, { currency: 'usd' })),
    Code.INVALID_ARGUMENT,
    'INVALID_FIELD',
    { field: 'unit_price.currency_code' },
  );
});

test('INVALID_ARGUMENT names the field: an empty key', async () => {
  await expectError(() => call(servers().cart, 'GetSession', { key: '' }), Code.INVALID_ARGUMENT, 'INVALID_FIELD', {
    field: 'key',
  });
});

test('INVALID_ARGUMENT names the field: a request id reused with other fields', async () => {
  const { cart } = servers();
  await start('node-reused-id');
  const rid = requestId();
  await call(cart, 'AddItem', addItem('node-reused-id', 'A', 1, 100, { rid }));
  await expectError(
    () => call(cart, 'AddItem', addItem('node-reused-id', 'A', 2, 100, { rid })),
    Code.INVALID_ARGUMENT,
    'INVALID_FIELD',
    { field: 'request_id' },
  );
});

test('NOT_FOUND: a session never started', async () => {
  await expectError(
    () => call(servers().cart, 'GetSession', { key: 'node-never-started' }),
    Code.NOT_FOUND,
    'SESSION_NOT_FOUND',
  );
});

test('NOT_FOUND: an unknown entry', async () => {
  const { todo } = servers();
  await call(todo, 'AddEntry', { list: 'node-chores', date: '2026-11-22', title: 'sweep', request_id: requestId() });
  await expectError(
    () => call(todo, 'DeleteEntry', { list: 'node-chores', id: 999_999, request_id: requestId() }),
    Code.NOT_FOUND,
    'ENTRY_NOT_FOUND',
  );
});

test('FAILED_PRECONDITION: adding to a checked-out cart', async () => {
  const { cart } = servers();
  const key = 'node-bought';
  await start(key);
  await call(cart, 'AddItem', addItem(key, 'A', 1, 100));
  await call(cart, 'Checkout', { key, request_id: requestId() });
  await expectError(() => call(cart, 'AddItem', addItem(key, 'A', 1, 100)), Code.FAILED_PRECONDITION, 'CART_CHECKED_OUT');
});

test('ABORTED: a version conflict at store-svc', async () => {
  const { store } = servers();
  const put = (expected_version) =>
    call(store, 'Put', { namespace: 'clients', key: 'node-conflict', value: Buffer.from('v'), expected_version });
  assert.equal((await put(0)).version, 1);
  await expectError(() => put(0), Code.ABORTED, 'VERSION_CONFLICT', {
    domain: STORE_DOMAIN,
    metadata: { current_version: '1' },
  });
});

test('UNAUTHENTICATED: the admin API without its token', async () => {
  const { admin, adminToken } = servers();
  assert.ok(adminToken, 'ADMIN_TOKEN is set by the Rust side');
  const stats = await call(admin, 'GetStats', {}, { metadata: [['authorization', `Bearer ${adminToken}`]] });
  assert.ok(stats.uptime);
  await expectError(
    () => call(admin, 'GetStats', {}, { metadata: [['authorization', 'Bearer wrong']] }),
    Code.UNAUTHENTICATED,
    'ADMIN_TOKEN_REQUIRED',
  );
  await expectError(() => call(admin, 'GetStats', {}), Code.UNAUTHENTICATED, 'ADMIN_TOKEN_REQUIRED');
});
