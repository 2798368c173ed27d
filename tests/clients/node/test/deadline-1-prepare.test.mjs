// DEADLINE_EXCEEDED sent by the server, step 1 of 3 (session-svc runs with
// --default-deadline 1s): with store-svc running, the cart exists and both skus' actors are
// live, so the calls of step 2 need nothing from the store but their own write. The Rust side
// (tests/tests/clients_node.rs) then freezes store-svc with SIGSTOP.

import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { LATE_KEY, addItem, call, close, servers } from './support.mjs';

after(close);

test('prepare: the cart and live sku actors', async () => {
  const { cart } = servers();
  for (const key of [LATE_KEY, 'node-warm-up']) await call(cart, 'StartSession', { key });
  await call(cart, 'AddItem', addItem('node-warm-up', 'held', 1, 100));
  await call(cart, 'AddItem', addItem('node-warm-up', 'late', 1, 100));
  assert.equal((await call(cart, 'GetSession', { key: LATE_KEY })).items.length, 0);
});
