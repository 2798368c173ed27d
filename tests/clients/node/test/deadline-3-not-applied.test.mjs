// DEADLINE_EXCEEDED sent by the server, step 3 of 3, store-svc thawed: the late AddItem was
// not applied; retried with the same request id, it is. Run by tests/tests/clients_node.rs.

import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, test } from 'node:test';

import { Code, LATE_KEY, LATE_REQUEST_ID, addItem, call, close, quantityOf, servers } from './support.mjs';

after(close);

test('the refused write was not applied, and its retry is', async () => {
  const { cart } = servers();
  const deadline = Date.now() + 20_000;
  let got;
  for (;;) {
    try {
      got = await call(cart, 'GetSession', { key: LATE_KEY });
      break;
    } catch (error) {
      if (error.code !== Code.UNAVAILABLE || Date.now() > deadline) throw error;
      await sleep(200);
    }
  }
  assert.equal(quantityOf(got, 'late'), 0, 'a server-sent DEADLINE_EXCEEDED was applied');
  const retried = await call(cart, 'AddItem', addItem(LATE_KEY, 'late', 1, 100, { rid: LATE_REQUEST_ID }));
  assert.equal(quantityOf(retried, 'late'), 1);
});
