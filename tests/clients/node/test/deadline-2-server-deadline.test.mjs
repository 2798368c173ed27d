// DEADLINE_EXCEEDED sent by the server, step 2 of 3, store-svc frozen: a first AddItem holds
// the cart's actor (its write waits on the store), and a second one, sent without a client
// deadline so that only the server's 1 s default applies, waits in the mailbox until
// session-svc answers DEADLINE_EXCEEDED: it was never executed. Run by
// tests/tests/clients_node.rs, which thaws the store before step 3.

import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, test } from 'node:test';

import { Code, LATE_KEY, LATE_REQUEST_ID, addItem, call, close, expectError, servers } from './support.mjs';

after(close);

test('a write that waited past the server deadline is refused, not executed', async () => {
  const { cart } = servers();
  // Its outcome is not checked: it reached the frozen store.
  const held = call(cart, 'AddItem', addItem(LATE_KEY, 'held', 1, 100), { timeoutMs: 3000 }).catch((error) => error);
  try {
    await sleep(500); // the first AddItem reaches the actor and its write the store
    const started = Date.now();
    await expectError(
      // No deadline: grpc-js then sends no grpc-timeout and never times out itself.
      () => call(cart, 'AddItem', addItem(LATE_KEY, 'late', 1, 100, { rid: LATE_REQUEST_ID }), { timeoutMs: null }),
      Code.DEADLINE_EXCEEDED,
      'DEADLINE_EXCEEDED',
    );
    assert.ok(Date.now() - started < 3000, 'answered at the 1 s default deadline');
  } finally {
    await held;
  }
});
