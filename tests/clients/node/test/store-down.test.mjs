// UNAVAILABLE: store-svc was killed before this file runs. Run by tests/tests/clients_node.rs.

import { after, test } from 'node:test';

import { Code, call, close, expectError, servers } from './support.mjs';

after(close);

test('UNAVAILABLE with the store down', async () => {
  await expectError(
    () => call(servers().cart, 'StartSession', { key: 'node-during-outage' }),
    Code.UNAVAILABLE,
    'STORE_UNAVAILABLE',
  );
});
