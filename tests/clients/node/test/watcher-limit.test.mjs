// RESOURCE_EXHAUSTED with RetryInfo: session-svc runs with --max-watchers-per-key 1, and a
// second WatchSession on the same key is refused. Run by tests/tests/clients_node.rs.

import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { Code, call, close, expectError, servers, watch } from './support.mjs';

after(close);

test('RESOURCE_EXHAUSTED with RetryInfo beyond the watchers per key', async () => {
  const { cart } = servers();
  const key = 'node-watched';
  await call(cart, 'StartSession', { key });
  const first = watch(cart, 'WatchSession', { key });
  try {
    assert.equal((await first.next()).key, key);
    const second = watch(cart, 'WatchSession', { key }, { timeoutMs: 10_000 });
    try {
      await expectError(() => second.next(), Code.RESOURCE_EXHAUSTED, 'WATCHER_LIMIT', {
        retryInfo: true,
        message: '--max-watchers-per-key',
      });
    } finally {
      second.cancel();
    }
  } finally {
    first.cancel();
  }
});
